"""did_core/plan.py: what a score job would refuse, found before it starts (`preflight`), and the numerics a
run is scored in. Scoring itself is tests/test_cli.py's (the CLI) and tests/test_faults.py's."""

from __future__ import annotations

import pytest
from cli_world import build_world

from did_core.config import ModelSpec
from did_core.errors import InputError
from did_core.plan import default_run_name, preflight, resolve_numerics
from did_core.run_settings import RunSettings


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    return build_world(tmp_path_factory.mktemp("world"), n_pairs=4, steps=(2,), beta=0.25)


def test_a_good_job_has_no_errors_and_its_settings(world):
    """cli_world's run folder saves no training arguments: its settings are the defaults, then the overrides."""
    errors, resolved = preflight(str(world["data"]), str(world["ref"]), run_dir=str(world["run"]))
    assert errors == {} and resolved.settings.beta == RunSettings().beta and resolved.sources["beta"] == "default"
    errors, resolved = preflight(str(world["data"]), str(world["ref"]), run_dir=str(world["run"]),
                                 overrides={"beta": 0.5})
    assert errors == {} and resolved.settings.beta == 0.5 and resolved.sources["beta"] == "override"


def test_every_refusal_is_one_error_line_per_field(world, tmp_path):
    errors, resolved = preflight("", "", run_dir=None)
    assert resolved is None and set(errors) == {"data", "reference", "run_dir"}
    assert errors["data"] == "error: give a dataset (upload or path)"
    assert errors["reference"] == "error: give a reference model"
    assert errors["run_dir"].startswith("error: give either a TRL output folder or checkpoints")
    missing = tmp_path / "missing.jsonl"
    errors, _ = preflight(str(missing), str(world["ref"]), policies=[str(tmp_path)], run_dir=str(world["run"]))
    assert errors["data"] == f"error: {missing}: no such file or directory"
    assert errors["policies"].startswith("error: ") and "run_dir" in errors  # an empty folder is no model; both given
    errors, resolved = preflight(str(world["data"]), str(world["ref"]), run_dir=str(tmp_path / "no-run"))
    assert resolved is None and list(errors) == ["run_dir"] and errors["run_dir"].startswith("error: ")
    errors, resolved = preflight(str(world["data"]), str(world["ref"]), run_dir=str(world["run"]),
                                 overrides={"beta": -1.0})
    assert resolved is None and list(errors) == ["settings"] and errors["settings"].startswith("error: bad setting")
    assert all("\n" not in e for e in errors.values())


def test_numerics_and_the_default_run_name():
    rs = RunSettings(beta=0.1)
    assert resolve_numerics(None, rs) == rs.default_numerics() == resolve_numerics("auto", rs)
    assert resolve_numerics("both", rs) == ("exact", "trainer")
    assert resolve_numerics(["trainer", "exact"], rs) == ("exact", "trainer")  # always in NUMERICS order
    with pytest.raises(InputError, match="exact, trainer or both, got 'fp8'"):
        resolve_numerics("fp8", rs)
    ref = ModelSpec("ref", "/m/ref", "reference")
    assert default_run_name(ref, [], "/x/my run", "/d/pairs.v2.jsonl") == "my_run__pairs"
    assert default_run_name(ref, [ModelSpec("c", "/m/ckpt-7")], None, "d.jsonl") == "ckpt-7__d"
