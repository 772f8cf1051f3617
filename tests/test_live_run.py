"""did_core/live_run.py: the live run's record. A resumed training keeps the stored steps up to where it
resumes and drops the later ones; another probe or reference starts over; a step replaces its own entry;
a run `score` wrote is never taken over. The callback that writes it is tests/test_callback.py's."""

from __future__ import annotations

from dataclasses import replace

import pytest

from did_core import live_run
from did_core.errors import InputError
from did_core.workspace import Workspace


@pytest.fixture
def ws(tmp_path) -> Workspace:
    """A synthetic run `grown` (checkpoints at steps 100, 200, 300) and a live run `live` of all three."""
    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(tmp_path, n_pairs=10, n_checkpoints=3, seed=0, tokens=False, run_name="grown")
    space = Workspace(tmp_path)
    m = space.run("grown")
    info = {"output_dir": "out", "every": 100, "score_seconds": {"100": 1.0, "200": 2.0, "300": 3.0}}
    live_run.write(space, m.replace(name="live", live_info=info), live=True)
    return space


def test_a_resume_keeps_the_steps_up_to_it_and_drops_the_later_ones(ws):
    stored = ws.run("live")
    assert stored.is_live and stored.live is True and stored.last_write
    new = stored.replace(checkpoints=(), live_info={"output_dir": "out", "every": 100})
    resumed = live_run.continue_from(ws, new, global_step=200)
    assert [e.step for e in resumed.checkpoints] == [100, 200]
    assert resumed.live_info["score_seconds"] == {"100": 1.0, "200": 2.0} and resumed.live_info["every"] == 100
    assert [e.step for e in live_run.continue_from(ws, new, global_step=10**6).checkpoints] == [100, 200, 300]
    other_probe = new.replace(dataset=replace(new.dataset, fingerprint="another"))
    assert live_run.continue_from(ws, other_probe, global_step=200) == other_probe  # started over
    fresh = new.replace(name="new-live")
    assert live_run.continue_from(ws, fresh, global_step=200) == fresh  # nothing stored under that name


def test_a_step_replaces_its_own_entry_in_step_order(ws):
    m = ws.run("live")
    first, second, third = m.checkpoints
    out = live_run.with_step(m.replace(checkpoints=(third, first)), second, 2.34567)
    assert [e.step for e in out.checkpoints] == [100, 200, 300]
    again = live_run.with_step(out, replace(second, score="rescored"), 5.0)
    assert [e.step for e in again.checkpoints] == [100, 200, 300] and again.checkpoints[1].score == "rescored"
    assert again.live_info["score_seconds"]["200"] == 5.0 and out.live_info["score_seconds"]["200"] == 2.3457
    assert live_run.step_name(200) == "step-200"
    assert live_run.step_model_fingerprint("r", 2) != live_run.step_model_fingerprint("r", 3)
    assert live_run.step_model_fingerprint("r", 2) == live_run.step_model_fingerprint("r", 2)


def test_a_run_score_wrote_is_never_taken_over(ws):
    assert live_run.stored_live_run(ws, "missing") is None
    assert live_run.stored_live_run(ws, "live").name == "live"
    with pytest.raises(InputError, match="not written by DIDCallback"):
        live_run.stored_live_run(ws, "grown")
    ended = live_run.write(ws, ws.run("live"), live=False, log_history=[{"step": 1, "loss": 0.5}])
    assert ws.run("live").live is False and ws.run("live").is_live  # ended, still the callback's
    assert ws.run("live").trainer_log_history == ended.trainer_log_history
