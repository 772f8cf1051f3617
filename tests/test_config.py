"""did_core/config.py: ScoreSettings refuses bad values and resolves its defaults per device; ModelSpec
refuses an empty name, path or unknown role; the default workspace follows DID_WORKSPACE."""

from __future__ import annotations

from pathlib import Path

import pytest

from did_core.config import ModelSpec, ScoreSettings, default_workspace


@pytest.mark.parametrize("bad", [{"dtype": "fp8"}, {"device": "tpu"}, {"token_budget": 15}, {"max_memory": 0},
                                 {"limit": 0}])
def test_bad_score_settings_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ScoreSettings(**bad)


def test_score_settings_defaults():
    s = ScoreSettings()
    assert (s.budget_for("cpu"), s.budget_for("cuda")) == (512, 16384)
    assert ScoreSettings(token_budget=64).budget_for("cuda") == 64
    assert s.resolved_dtype == "float32" and ScoreSettings(dtype="bfloat16").resolved_dtype == "bfloat16"
    assert s.fingerprint_fields() == {"token_level": True, "dtype": "float32"}
    assert ScoreSettings(device="cuda", token_budget=99).fingerprint_fields() == s.fingerprint_fields()


def test_model_spec_and_default_workspace(monkeypatch):
    for bad in ({"name": "", "path": "p"}, {"name": "n", "path": ""}, {"name": "n", "path": "p", "role": "judge"}):
        with pytest.raises(ValueError):
            ModelSpec(**bad)
    monkeypatch.setenv("DID_WORKSPACE", "/tmp/ws")
    assert default_workspace() == Path("/tmp/ws")
    monkeypatch.setenv("DID_WORKSPACE", "")
    assert default_workspace() == Path("workspace")
