"""Pure functions between the UI's state and the outside world: Plotly selection events →
example ids, and query parameters ↔ the selected run, checkpoint and example.

No streamlit import: everything here is tested as plain Python.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PARAM_KEYS = ("run", "ckpt", "a", "example", "numerics", "runs", "a_run")
"""Query parameters a view may carry: run, checkpoint, the baseline checkpoint A of Compare, example,
and the numerics the numbers are in (a run scored in both: docs/NUMERICS.md); `runs`, the runs lined up
(`resolve_runs`), and `a_run`, the run of Compare's A when it is another run (`resolve_runs` too)."""

PAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "": ("run", "ckpt", "numerics", "runs"), "runs": ("run", "ckpt", "numerics", "runs"),
    "curves": ("run", "ckpt", "numerics", "runs"), "margins": ("run", "ckpt", "numerics", "runs"),
    "entropy": ("run", "ckpt", "numerics", "runs"),
    "compare": ("run", "ckpt", "a", "numerics", "a_run"), "example": ("run", "ckpt", "example", "numerics"),
    "score": (), "lab": (),
}
"""The query parameters each page owns, by url path ("" is the default page at /, Runs): what its
URL carries, what a link to it carries, and the only ones it reads (any other is ignored, so
`example` never leaks into another page's view). `run` and `ckpt` are the sidebar's pickers, on
every page that shows a run; `a` is Compare's A; `example` is the pair the Example page shows;
`numerics` (a third picker, for runs scored in both numerics) is kept across pages like run and ckpt.
`runs` (the runs lined up: Runs' sweep table, the overlaid curves) is kept across the pages that
overlay runs; `a_run` is Compare's A's run. Score and Lab show no run. docs/ARCHITECTURE.md,
"Navigation and the URL"."""


def page_params(url_path: str | None, need_a: bool = False) -> tuple[str, ...]:
    """PAGE_PARAMS for `url_path`; for a page not listed there, run and ckpt (and `a` when `need_a`)."""
    if url_path in PAGE_PARAMS:
        return PAGE_PARAMS[url_path]
    return ("run", "ckpt", "a", "numerics") if need_a else ("run", "ckpt", "numerics")


@dataclass(frozen=True)
class ViewState:
    """What a shared URL selects. Every field is already validated (or None)."""

    run: str | None = None
    """A run name from `Workspace.run_names()`."""
    ckpt: str | None = None
    """A checkpoint name of that run: the one shown (B in Compare). Default: the last."""
    a: str | None = None
    """The baseline checkpoint A in Compare. Default: the first."""
    example: str | None = None
    """A `pair_id` of that run."""
    numerics: str | None = None
    """"trainer" (or "exact" when a run's primary is trainer) among those the run was scored in; None:
    the run's primary (exact when scored), which a URL does not carry."""
    runs: str | None = None
    """Not resolved by `resolve` (the pages that line runs up call `resolve_runs`)."""
    a_run: str | None = None
    """Not resolved by `resolve` (Compare calls `resolve_runs` with its comparable runs)."""


def first_value(value: str | Sequence[str] | None) -> str | None:
    """A query parameter as one string: the last one when repeated (as `st.query_params` does)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value[-1]) if len(value) else None


def choose(wanted: str | None, options: Sequence[str], fallback: str | None = None) -> str | None:
    """`wanted` when it is one of `options`, else `fallback` when it is, else the first option.

    Membership in `options` (names the Workspace readers listed) is the validation: a name from a
    URL is never used to build a path unless it matched a name the store itself returned.
    """
    if wanted is not None and wanted in options:
        return wanted
    if fallback is not None and fallback in options:
        return fallback
    return options[0] if options else None


def _point_custom_data(point: Mapping[str, Any]) -> Any:
    # Streamlit names it "customdata" (Plotly's name); accept the Python-side spelling too.
    for key in ("customdata", "custom_data"):
        if key in point:
            return point[key]
    return None


def pair_ids_from_selection(event: Any) -> list[str]:
    """Every selected point's pair id, in selection order, without repeats.

    `event` is what `st.plotly_chart(..., on_select="rerun")` returns (or its session-state dict):
    `{"selection": {"points": [{"customdata": [pair_id, ...], ...}, ...], ...}}`. The figure must
    put the pair id first in `custom_data` (a scalar `customdata` is accepted too).
    """
    if event is None:
        return []
    selection = event.get("selection") if isinstance(event, Mapping) else getattr(event, "selection", None)
    if not selection:
        return []
    points = selection.get("points") if isinstance(selection, Mapping) else getattr(selection, "points", None)
    out: list[str] = []
    for point in points or []:
        if not isinstance(point, Mapping):
            continue
        data = _point_custom_data(point)
        if isinstance(data, list | tuple):
            data = data[0] if data else None
        if data is None:
            continue
        pid = str(data)
        if pid not in out:
            out.append(pid)
    return out


def pair_id_from_selection(event: Any, valid_ids: Iterable[str] | None = None) -> str | None:
    """The first selected pair id (validated against `valid_ids` when given), or None."""
    valid = None if valid_ids is None else set(valid_ids)
    for pid in pair_ids_from_selection(event):
        if valid is None or pid in valid:
            return pid
    return None


@dataclass(frozen=True)
class Resolution:
    """What a URL asked for, what is shown instead, and why."""

    state: ViewState
    asked: dict[str, str]
    """The owned parameters the URL gave (non-empty values only), as given."""
    warnings: tuple[str, ...] = ()
    """One sentence per asked value that could not be honoured: what was asked, what is shown."""

    def corrected_url(self) -> dict[str, str]:
        """The parameters the URL should carry: each asked one with the value shown. A parameter the
        URL did not give is not added: its default is what is shown, and writing it would cost the
        browser a history entry on every bare load (Streamlit pushes one per query change)."""
        return {k: v for k in self.asked if (v := getattr(self.state, k)) is not None}


def _quoted(value: str, limit: int = 60) -> str:
    """A value from a URL for a message: quoted, one line, at most `limit` characters."""
    text = " ".join(str(value).split())
    return f"'{text[:limit]}…'" if len(text) > limit else f"'{text}'"


def resolve(params: Mapping[str, Any], runs: Sequence[str], checkpoints_of: Callable[[str], Sequence[str]],
            pair_ids_of: Callable[[str], Collection[str]] | None = None, *, keys: Iterable[str] = PARAM_KEYS,
            remembered: Mapping[str, Any] | None = None,
            baselines: Callable[[list[str]], tuple[Sequence[str], str | None]] | None = None,
            numerics_of: Callable[[str], Sequence[str]] | None = None) -> Resolution:
    """The view to show for the URL parameters `params` (only `keys` are read), with a warning for
    every value that names something the workspace does not have.

    `checkpoints_of(run)` lists a run's checkpoints in step order, `pair_ids_of(run)` its pair ids
    in dataset order (the Example page's order); `baselines(checkpoints) -> (options, default)` what
    Compare offers as A (default: the checkpoints, the first); `numerics_of(run)` the numerics it was
    scored in, the primary first (default: exact only). Defaults: the first run, its last
    checkpoint (B), that A, no example (the Example page shows the first pair). A bad value falls
    back to that default, except a bad example, which falls back to the run's first pair by name.
    `remembered` (values a session last showed) fills keys the URL did not give, silently; the
    dashboard passes none, so that a URL alone decides the view and Back restores it exactly.
    Membership in the store's own lists is the validation: a name from a URL is never used to build
    a path unless it matched a name the store itself returned.
    """
    keys = tuple(keys)
    asked = {k: v for k in keys if (v := first_value(params.get(k)))}
    kept = {k: v for k in keys if k not in asked and (v := first_value((remembered or {}).get(k)))}
    warnings: list[str] = []

    def pick(key: str, options: Sequence[str], default: str | None, message: Callable[[str, str], str]) -> str | None:
        if key in asked:
            if asked[key] in options:
                return asked[key]
            if default is not None:
                warnings.append(message(_quoted(asked[key]), default))
            return default
        return kept[key] if kept.get(key) in options else default

    run = pick("run", runs, runs[0] if runs else None,
               lambda want, got: f"No run {want} in this workspace; showing {got}.")
    if run is None:
        return Resolution(ViewState(), asked)
    ckpts = list(checkpoints_of(run))
    ckpt = a = example = None
    if "ckpt" in keys:
        ckpt = pick("ckpt", ckpts, ckpts[-1] if ckpts else None,
                    lambda want, got: f"Run {_quoted(run)} has no checkpoint {want}; showing {got}.")
    if "a" in keys:
        a_options, a_default = baselines(ckpts) if baselines else (ckpts, ckpts[0] if ckpts else None)
        a = pick("a", a_options, a_default,
                 lambda want, got: f"Run {_quoted(run)} has no checkpoint {want} to compare from; comparing from {got}.")
    if "example" in keys and pair_ids_of is not None and ("example" in asked or "example" in kept):
        ids = pair_ids_of(run)
        first = next(iter(ids), None) if "example" in asked else None
        example = pick("example", ids, first,
                       lambda want, got: f"Run {_quoted(run)} has no pair {want}; showing its first pair, {got}.")
    numerics = None
    if "numerics" in keys:
        have = list(numerics_of(run)) if numerics_of else ["exact"]
        numerics = pick("numerics", have, have[0],
                        lambda want, got: f"Run {_quoted(run)} was not scored in {want} numerics; showing {got}.")
        numerics = None if numerics == have[0] else numerics  # the primary is the default: not in the URL
    return Resolution(ViewState(run=run, ckpt=ckpt, a=a, example=example, numerics=numerics), asked, tuple(warnings))


def resolve_state(params: Mapping[str, Any], remembered: Mapping[str, Any], runs: Sequence[str],
                  checkpoints_of: Any, pair_ids_of: Any | None = None) -> ViewState:
    """The view to show: URL parameters first, then `remembered`, then defaults (`resolve`, all
    PARAM_KEYS, without the warnings). A forged URL falls back to a default view."""
    return resolve(params, runs, checkpoints_of, pair_ids_of, remembered=remembered).state


def to_query_params(state: ViewState, keys: Iterable[str] = PARAM_KEYS) -> dict[str, str]:
    """The URL parameters for `state` (only set fields, only `keys`)."""
    return {k: v for k in keys if (v := getattr(state, k)) is not None}


RUNS_SEP = ","


def runs_value(names: Iterable[str]) -> str:
    """The `runs` parameter for these run names, in order ("" for none)."""
    return RUNS_SEP.join(dict.fromkeys(names))


def resolve_runs(value: str | Sequence[str] | None, runs: Sequence[str], *,
                 why: Mapping[str, str] | None = None) -> tuple[list[str], tuple[str, ...]]:
    """The runs a `runs=a,b` parameter asks for that are among `runs` (in the URL's order, without
    repeats), and one warning per name that is not: unknown to the workspace, or, when `why` has it,
    not offered for the reason `why[name]` gives (a sentence). Membership is the validation, as in
    `resolve`."""
    asked = _run_names(first_value(value) or "", runs)
    known, warnings = [], []
    for name in dict.fromkeys(asked):
        if name in runs:
            known.append(name)
        elif why and name in why:
            warnings.append(f"Run {_quoted(name)} is not offered here: {why[name]}.")
        else:
            warnings.append(f"No run {_quoted(name)} in this workspace; it is left out.")
    return known, tuple(warnings)


def _run_names(value: str, runs: Sequence[str]) -> list[str]:
    """The names in a `runs=` value. A run name may itself hold the separator (run names allow ","):
    at each place the longest run of comma-separated parts that names a known run is one name (so
    "a,b" is the run "a,b" when the workspace has it, else the runs "a" and "b")."""
    parts, names, i = value.split(RUNS_SEP), [], 0
    known = set(runs)
    while i < len(parts):
        j = next((j for j in range(len(parts), i + 1, -1) if RUNS_SEP.join(parts[i:j]) in known), i + 1)
        name = RUNS_SEP.join(parts[i:j])
        if name.strip():
            names.append(name)
        i = j
    return names
