"""The dry run says what the real run would (issue 32, defect 12)."""

from __future__ import annotations

import json

import pytest

from retlink.core.errors import ConfigError
from retlink.eval.runner import run_config
from retlink.eval.runs import RUN_META
from tests.hostile.common import DEMO_CONFIG, assert_refused, run_cli


def test_dry_run_refuses_a_folder_of_another_config(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_META).write_text(json.dumps({"fingerprint": "another-config"}))
    with pytest.raises(ConfigError, match="different config"):
        run_config(DEMO_CONFIG, out=out, limit=1, dry_run=True)
    assert_refused(run_cli("eval", "run", str(DEMO_CONFIG), "--dry-run", "--out", str(out)), "different config")
    assert json.loads((out / RUN_META).read_text()) == {"fingerprint": "another-config"}
