"""Deep links (did_ui/selection.py): `resolve` honours a good link, warns and falls back on a bad value,
reads only the page's own parameters; `resolve_runs` for `?runs=` lists."""

from __future__ import annotations

import pytest

RUNS = ["demo-high", "demo-low"]


CKPTS = {"demo-high": ["checkpoint-20", "checkpoint-100"], "demo-low": ["checkpoint-20", "checkpoint-60", "checkpoint-100"]}


PAIRS = {"demo-high": ["high-00-00", "high-00-01"], "demo-low": ["low-00-00", "low-00-17"]}


EXAMPLE_KEYS = ("run", "ckpt", "example")


def _resolve(params, keys=EXAMPLE_KEYS, **kwargs):
    from did_ui import selection

    return selection.resolve(params, RUNS, CKPTS.__getitem__, PAIRS.__getitem__, keys=keys, **kwargs)


def test_a_good_deep_link_is_honoured_without_a_warning_or_a_rewrite():
    r = _resolve({"run": "demo-low", "ckpt": "checkpoint-60", "example": "low-00-17"})
    assert (r.state.run, r.state.ckpt, r.state.example) == ("demo-low", "checkpoint-60", "low-00-17")
    assert r.warnings == () and r.corrected_url() == r.asked


@pytest.mark.parametrize(("params", "shown", "warning"), [
    ({"run": "nope"}, ("demo-high", "checkpoint-100", None), "No run 'nope' in this workspace; showing demo-high."),
    ({"run": "demo-low", "ckpt": "checkpoint-7"}, ("demo-low", "checkpoint-100", None),
     "Run 'demo-low' has no checkpoint 'checkpoint-7'; showing checkpoint-100."),
    # the README's old form: a row number, not one of the ids the UI shows
    ({"run": "demo-low", "ckpt": "checkpoint-100", "example": "17"}, ("demo-low", "checkpoint-100", "low-00-00"),
     "Run 'demo-low' has no pair '17'; showing its first pair, low-00-00."),
    ({"run": "demo-low", "example": "high-00-01"}, ("demo-low", "checkpoint-100", "low-00-00"),
     "Run 'demo-low' has no pair 'high-00-01'; showing its first pair, low-00-00."),
])
def test_a_bad_deep_link_value_warns_and_falls_back(params, shown, warning):
    r = _resolve(params)
    assert (r.state.run, r.state.ckpt, r.state.example) == shown
    assert r.warnings == (warning,)
    assert r.corrected_url() == {k: v for k, v in zip(EXAMPLE_KEYS, shown, strict=True) if k in params}


def test_every_bad_value_of_one_link_is_named():
    r = _resolve({"run": "nope", "ckpt": "checkpoint-60", "example": "x"})
    assert r.state.run == "demo-high"
    assert r.state.ckpt == "checkpoint-100"  # checkpoint-60 is demo-low's, not demo-high's
    assert r.warnings == ("No run 'nope' in this workspace; showing demo-high.",
                          "Run 'demo-high' has no checkpoint 'checkpoint-60'; showing checkpoint-100.",
                          "Run 'demo-high' has no pair 'x'; showing its first pair, high-00-00.")


def test_compare_checkpoint_a_accepts_its_baselines_and_warns_otherwise():
    def baselines(ckpts):
        return ["reference", *ckpts], ckpts[0]

    keys = ("run", "ckpt", "a")
    assert _resolve({"run": "demo-low", "a": "reference"}, keys, baselines=baselines).state.a == "reference"
    r = _resolve({"run": "demo-low", "a": "zzz"}, keys, baselines=baselines)
    assert r.state.a == "checkpoint-20"
    assert r.warnings == ("Run 'demo-low' has no checkpoint 'zzz' to compare from; comparing from checkpoint-20.",)


def test_only_the_pages_own_parameters_are_read():
    """`example` belongs to the Example page: on another page it is neither read nor warned about,
    and a bare address (or an empty value) is the defaults, with nothing to write."""
    from did_ui import selection

    r = _resolve({"run": "demo-low", "example": "nope", "a": "nope"}, keys=selection.page_params("margins"))
    assert r.state.example is None and r.state.a is None and r.warnings == ()
    assert r.asked == {"run": "demo-low"} and r.corrected_url() == {"run": "demo-low"}
    bare = _resolve({"run": "", "example": ""})
    assert (bare.state.run, bare.state.ckpt, bare.state.example) == ("demo-high", "checkpoint-100", None)
    assert bare.warnings == () and bare.corrected_url() == {} == bare.asked
    assert selection.page_params("example") == ("run", "ckpt", "example", "numerics")
    assert selection.page_params("compare") == ("run", "ckpt", "a", "numerics", "a_run")
    assert selection.page_params("curves") == ("run", "ckpt", "numerics", "runs")
    assert selection.page_params("lab") == () == selection.page_params("score")


def test_a_warning_quotes_a_forged_value_on_one_short_line():
    r = _resolve({"run": "x" * 500 + "\n<script>"})
    (message,) = r.warnings
    assert "\n" not in message and len(message) < 120 and message.startswith("No run 'xxx") and "…'" in message


def test_remembered_values_fill_gaps_silently():
    r = _resolve({"run": "demo-low"}, remembered={"ckpt": "checkpoint-7", "example": "low-00-17"})
    assert (r.state.ckpt, r.state.example) == ("checkpoint-100", "low-00-17") and r.warnings == ()


def test_numerics_in_the_url_is_validated_against_the_runs_numerics():
    """A run scored in both numerics can be shown in either (`numerics=`); one it was not scored in
    warns and shows the primary; a bare address shows the primary without writing it."""
    from did_ui import selection

    def numerics_of(run):
        return ["exact", "trainer"] if run == "both" else ["exact"]
    ckpts = {"both": ["c-1"], "one": ["c-1"]}.__getitem__
    keys = selection.page_params("curves")
    r = selection.resolve({"run": "both", "numerics": "trainer"}, ["both", "one"], ckpts, keys=keys,
                          numerics_of=numerics_of)
    assert r.state.numerics == "trainer" and r.warnings == ()
    r = selection.resolve({"run": "one", "numerics": "trainer"}, ["both", "one"], ckpts, keys=keys,
                          numerics_of=numerics_of)
    assert r.state.numerics is None  # the primary
    assert r.warnings == ("Run 'one' was not scored in 'trainer' numerics; showing exact.",)
    assert r.corrected_url() == {"run": "one"}
    bare = selection.resolve({}, ["both", "one"], ckpts, keys=keys, numerics_of=numerics_of)
    assert bare.state.numerics is None and bare.corrected_url() == {}


def test_runs_values_are_resolved_against_the_workspace():
    """`?runs=` (overlaid curves, the sweep table): duplicates dropped, unknown runs warned about and left
    out, a run that is not offered named with the reason; `runs_value` writes the list back."""
    from did_ui import selection

    assert selection.resolve_runs("b,x,b,a", ["a", "b"]) == (["b", "a"], ("No run 'x' in this workspace; it is left out.",))
    assert selection.resolve_runs(None, ["a"]) == ([], ())
    assert selection.resolve_runs("a", ["b"], why={"a": "a was scored on another dataset (d.jsonl)"})[1] == (
        "Run 'a' is not offered here: a was scored on another dataset (d.jsonl).",)
    assert selection.runs_value(["b", "a", "b"]) == "b,a"


def test_run_names_with_the_separator_survive_the_url():
    """Run names may hold ","; `runs_value` then `resolve_runs` gives the same runs back, the longest
    known name winning at each place."""
    from did_ui import selection

    runs = ["beta=0.1,lr=1e-6", "beta=0.1", "plain", "a,b,c"]
    for chosen in (["beta=0.1,lr=1e-6", "plain"], ["plain", "a,b,c", "beta=0.1"], ["a,b,c"]):
        assert selection.resolve_runs(selection.runs_value(chosen), runs) == (chosen, ())
    assert selection.resolve_runs("a,b,x,plain", runs) == (
        ["plain"], ("No run 'a' in this workspace; it is left out.", "No run 'b' in this workspace; it is left out.",
                    "No run 'x' in this workspace; it is left out."))
    assert selection.resolve_runs(",,plain,", runs) == (["plain"], ())
