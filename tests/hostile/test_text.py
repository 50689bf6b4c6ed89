"""Text fields: valid Unicode or a clear error, and nothing printed raw to a terminal (issue 32,
defects 2 and 15)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retlink.agent.nodes.validator import check_unicode
from retlink.core.errors import InputError
from retlink.core.terminal import for_terminal
from tests.hostile.common import assert_refused, run_cli


def test_link_refuses_a_mention_that_is_not_utf8_before_models_load():
    res = run_cli("link", "--mention", b"Fal\xffcon", timeout=60)
    assert_refused(res, "mention is not valid Unicode")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), min_size=0, max_size=20), st.integers(0xD800, 0xDFFF))
def test_check_unicode_refuses_any_lone_surrogate(text, code):
    bad = text + chr(code)
    with pytest.raises(InputError, match="mention"):
        check_unicode(bad, "mention")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30))
def test_check_unicode_keeps_valid_text(text):
    assert check_unicode(text, "mention") == text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_for_terminal_prints_no_control_characters(text):
    shown = for_terminal(text)
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn") for c in shown)
    if all(unicodedata.category(c)[0] != "C" and c != "\\" for c in text):
        assert shown == text


def test_escape_sequences_become_visible():
    assert for_terminal("a\x1b]0;pwned\x07b\u202e") == "a\\x1b]0;pwned\\x07b\\u202e"
