"""Text from users, KBs or models made safe to print on a terminal.

A mention is the user's (or a web page's) text: printed raw, its control characters are
terminal escape sequences (`ESC ]` retitles the window, `ESC [2J` clears it, CR overwrites a
line), and its brackets are rich markup. `for_terminal` shows each control or format
character as a visible escape, as `repr` would, and `markup_safe` also escapes rich markup.
JSON output needs neither: `json` escapes control characters itself.
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape

#: Unicode categories printed as escapes: controls (C0, DEL, C1), format characters (bidi
#: overrides that reorder what the eye reads), lone surrogates, unassigned and private use
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def for_terminal(text: str) -> str:
    """`text` with every control, format, surrogate or unassigned character written as a
    visible escape (`\\x1b`, `\\u202e`) and the backslash itself doubled, so the escapes are
    unambiguous; printable text (any script, emoji) is unchanged."""
    return "".join(
        "\\\\" if ch == "\\" else _escape_char(ch) if unicodedata.category(ch) in _UNSAFE else ch for ch in text
    )


def markup_safe(text: str) -> str:
    """`for_terminal` and rich's markup escape: for text inside a rich markup string."""
    return escape(for_terminal(text))
