"""did_core/sweep.py's rules: which runs are comparable pair by pair (and the clause saying why not), the
sentence a page shows for the others, and each run's learning rate with its source. The pages that use
them (cross-run Compare, the Runs page's sweep table) are tests/test_cross_run.py's."""

from __future__ import annotations

from did_core import sweep
from did_core.manifest import DatasetInfo, ModelEntry, RunManifest


def _run(name: str, data_fp: str = "d", ref_scores: dict | None = None, numerics=("exact",), source: str = "x/d.jsonl"):
    scores = {"exact": "ref-exact"} if ref_scores is None else ref_scores
    return RunManifest(name=name, dataset=DatasetInfo(data_fp, source), numerics=tuple(numerics),
                       reference=ModelEntry("reference", "", None, next(iter(scores.values()), ""), scores))


def test_the_learning_rate_and_its_source():
    bare = RunManifest(name="r", dataset=DatasetInfo("d"), reference=ModelEntry("ref", "", None, "fp", {}))
    assert sweep.learning_rate(bare.replace(trainer_log_history=({"step": 2, "learning_rate": 5e-4},))) == (
        5e-4, "trainer log")
    assert sweep.learning_rate(bare) == (None, "not recorded")
    assert sweep.learning_rate(bare.replace(extra={"trainer_args": {"learning_rate": 1e-3}})) == (1e-3, "trainer")
    assert sweep.trainer_args({"learning_rate": 1e-3, "seed": 0, "bf16": True, "output_dir": "x"}) == {
        "learning_rate": 1e-3, "seed": 0}


def test_comparable_runs_share_the_dataset_and_the_reference_score():
    base = _run("a")
    runs = {"a": base, "same": _run("same"), "data": _run("data", data_fp="e", source="/y/other.jsonl"),
            "ref": _run("ref", ref_scores={"exact": "another"}),
            "trainer-only": _run("trainer-only", ref_scores={"trainer": "ref-trainer"}, numerics=("trainer",))}
    assert sweep.why_not_comparable(base, runs["same"]) is None
    assert sweep.why_not_comparable(base, runs["data"]) == "data was scored on another dataset (other.jsonl)"
    assert sweep.why_not_comparable(base, runs["ref"]).startswith("ref was scored against another reference")
    assert sweep.why_not_comparable(base, runs["trainer-only"]) == "trainer-only was not scored in exact numerics"
    offered, refused = sweep.comparable_runs(runs, "a")
    assert offered == ["a", "same"] and list(refused) == ["data", "ref", "trainer-only"]
    assert refused["data"] == sweep.why_not_comparable(base, runs["data"])


def test_the_refusal_sentence_names_at_most_three_reasons():
    assert sweep.refusal_sentence({}, "a") == ""
    one = sweep.refusal_sentence({"b": "b was scored on another dataset (d.jsonl)"}, "a")
    assert one.startswith("Runs on another dataset or reference than a are not offered") and one.endswith(
        ": b was scored on another dataset (d.jsonl).")
    many = sweep.refusal_sentence({f"r{i}": f"reason {i}" for i in range(5)}, "a")
    assert "reason 2" in many and "reason 3" not in many and many.endswith("; and 2 more.")
