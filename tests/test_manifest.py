"""`did_core.manifest.RunManifest`: run.json read and written through one typed record."""

from __future__ import annotations

import json

import pytest

from did_core.errors import InputError
from did_core.manifest import DatasetInfo, ModelEntry, RunManifest

ENTRY = {"name": "checkpoint-2", "path": "/runs/x/checkpoint-2", "step": 2, "score": "fp2",
         "scores": {"exact": "fp2", "trainer": "fp2t"}}
RUN = {
    "name": "r", "created": "2026-12-02T00:00:00+00:00",
    "dataset": {"fingerprint": "dfp", "source": "d.jsonl", "n_pairs": 3, "conversational": False},
    "beta": 0.25, "settings": {"max_length": 64}, "run_settings": {"beta": {"value": 0.25, "source": "trainer"}},
    "settings_origin": "trainer", "overrides": [], "notes": ["a note"], "numerics": ["exact", "trainer"],
    "numerics_detail": {"exact": {"dtype": "float32", "sums": "float64"}},
    "reference": {"name": "reference", "path": "/ref", "step": None, "score": "fp0", "scores": {"exact": "fp0"}},
    "checkpoints": [ENTRY], "trainer_log_history": [{"step": 1, "loss": 0.69}], "samples": [],
    "extra": {"truncation": {"pairs_truncated": 0}},
}


def test_a_run_json_round_trips_unchanged():
    m = RunManifest.from_json(RUN)
    assert m.to_json() == RUN
    assert json.loads(json.dumps(m.to_json())) == RUN
    assert m.reference == ModelEntry("reference", "/ref", None, "fp0", {"exact": "fp0"})
    assert m.checkpoints[0].step == 2 and m.checkpoints[0].scores["trainer"] == "fp2t"
    assert m.dataset == DatasetInfo("dfp", "d.jsonl", 3, False)
    assert [e.name for e in m.models] == ["reference", "checkpoint-2"]
    assert m.model("checkpoint-2") is m.checkpoints[0] and not m.is_live


def test_a_live_run_keeps_its_live_fields_and_unknown_keys_survive():
    d = RUN | {"live": False, "last_write": "t", "live_info": {"every": 4}, "from_the_future": {"x": 1}}
    m = RunManifest.from_json(d)
    assert m.is_live and m.live is False and m.live_info == {"every": 4}
    assert m.other == {"from_the_future": {"x": 1}}
    assert m.to_json() == d
    assert m.replace(live=True).to_json()["live"] is True


def test_writer_gone_tells_a_killed_training_process_from_a_running_one():
    """`live` true and the recorded pid gone on this host: gone. A running pid, another host, no pid
    (an older callback) or a run that finished: not known to be gone."""
    import os
    import socket
    import subprocess
    import sys

    from did_core.manifest import live_writer

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()

    def m(live, info):
        return RunManifest.from_json(RUN | {"live": live, "last_write": "t", "live_info": info})

    assert live_writer() == {"pid": os.getpid(), "host": here}
    assert m(True, {"pid": dead.pid, "host": here}).writer_gone
    assert not m(True, live_writer()).writer_gone
    assert not m(True, {"pid": dead.pid, "host": here + "-elsewhere"}).writer_gone
    assert not m(True, {"every": 4}).writer_gone
    assert not m(False, {"pid": dead.pid, "host": here}).writer_gone
    assert not RunManifest.from_json(RUN).writer_gone


def test_an_older_run_json_gets_the_optional_fields_filled():
    old = {"name": "old", "dataset": {"fingerprint": "d"}, "beta": 0.1,
           "reference": {"name": "reference", "path": "/r", "score": "fp"},
           "checkpoints": [{"name": "c", "path": "/c", "step": 5, "score": "g"}]}
    m = RunManifest.from_json(old)
    assert m.numerics == ("exact",) and m.samples == () and m.extra == {}
    assert m.reference.scores == {"exact": "fp"} and m.reference.step is None
    assert m.checkpoints[0].scores == {"exact": "g"}
    assert m.to_json() == old  # read and written back, it keeps exactly its keys


def test_a_new_run_writes_no_samples_key_until_it_has_samples():
    m = RunManifest("n", DatasetInfo("d", "d.jsonl", 2), ModelEntry("reference", "/r", None, "fp", {"exact": "fp"}))
    assert "samples" not in m.to_json() and {"live", "last_write", "live_info"}.isdisjoint(m.to_json())
    sampled = m.replace(samples=({"model": "c", "samples": "sfp"},))
    assert sampled.to_json()["samples"] == [{"model": "c", "samples": "sfp"}]
    assert RunManifest.from_json(sampled.to_json()) == sampled and RunManifest.from_json(m.to_json()) == m


@pytest.mark.parametrize("bad, says", [
    ([], "not a JSON object"),
    ({"dataset": {"fingerprint": "d"}, "reference": ENTRY}, "missing name"),
    (RUN | {"reference": {"name": "reference"}}, "missing score"),
    (RUN | {"dataset": "d.jsonl"}, "expected a JSON object"),
    (RUN | {"checkpoints": [ENTRY | {"step": "two"}]}, "runs/r/run.json"),
])
def test_a_broken_run_json_is_one_input_error_that_names_the_file(bad, says):
    with pytest.raises(InputError, match=says):
        RunManifest.from_json(bad, "runs/r/run.json")


def test_model_names_an_unknown_model():
    with pytest.raises(InputError, match="no model 'nope'"):
        RunManifest.from_json(RUN).model("nope")


def test_the_live_run_helpers_take_and_return_manifests(tmp_path):
    """live_run's steps on RunManifests: with_step keeps steps in order (one entry a step), write marks
    it live and stores it as is, continue_from keeps the stored steps up to the resumed one, and a
    score run's name is never taken over."""
    from did_core import live_run
    from did_core.synthetic_ws import make_synthetic_workspace
    from did_core.workspace import Workspace

    make_synthetic_workspace(tmp_path, n_pairs=4, n_checkpoints=1, seed=0, chunk_size=4)
    ws = Workspace(tmp_path)
    scored = ws.run("synthetic")
    start = scored.replace(name="live", checkpoints=(), live_info={"every": 2, "score_seconds": {}})
    steps = [ModelEntry(live_run.step_name(s), f"out/checkpoint-{s}", s, f"fp{s}", {"exact": f"fp{s}"})
             for s in (4, 2, 6)]
    m = start
    for e in steps:
        m = live_run.with_step(m, e, 0.5)
    m = live_run.with_step(m, ModelEntry("step-4", "out/checkpoint-4", 4, "fp4b", {"exact": "fp4b"}), 0.25)
    assert [(c.step, c.score) for c in m.checkpoints] == [(2, "fp2"), (4, "fp4b"), (6, "fp6")]
    assert m.live_info["score_seconds"] == {"4": 0.25, "2": 0.5, "6": 0.5} and not m.is_live
    written = live_run.write(ws, m, live=True, log_history=[{"step": 6, "loss": 0.5}])
    assert written.is_live and written.live is True and written.last_write
    assert ws.run("live") == written and ws.run("live").trainer_log_history == ({"step": 6, "loss": 0.5},)
    stored = json.loads((ws.run_dir("live") / "run.json").read_text())
    assert stored == written.to_json() and stored["live"] is True and "samples" not in stored
    resumed = live_run.continue_from(ws, start.replace(created="later"), 4)
    assert [c.step for c in resumed.checkpoints] == [2, 4] and resumed.created == scored.created
    assert resumed.live_info == {"every": 2, "score_seconds": {"4": 0.25, "2": 0.5}}
    other = start.replace(settings={"another": True})
    assert live_run.continue_from(ws, other, 4) == other  # other settings: started over
    with pytest.raises(InputError, match="not written by DIDCallback"):
        live_run.continue_from(ws, start.replace(name="synthetic"), 4)
