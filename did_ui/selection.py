"""Pure functions between the UI's state and the outside world: Plotly selection events →
example ids, and query parameters ↔ the selected run, checkpoint and example.

No streamlit import: everything here is tested as plain Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PARAM_KEYS = ("run", "ckpt", "a", "example")
"""Query parameters a view may carry: run, checkpoint, the baseline checkpoint A of Compare, example."""


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


def resolve_state(params: Mapping[str, Any], remembered: Mapping[str, Any], runs: Sequence[str],
                  checkpoints_of: Any, pair_ids_of: Any | None = None) -> ViewState:
    """The view to show: URL parameters first, then what this session last showed, then defaults.

    `checkpoints_of(run) -> list[str]` and `pair_ids_of(run) -> Collection[str]` are the store's
    lists; anything not in them is dropped, so a forged URL falls back to a default view.
    """
    def wanted(key: str) -> str | None:
        return first_value(params.get(key)) or first_value(remembered.get(key))

    run = choose(wanted("run"), runs)
    if run is None:
        return ViewState()
    ckpts = list(checkpoints_of(run))
    ckpt = choose(wanted("ckpt"), ckpts, fallback=ckpts[-1] if ckpts else None)
    a = choose(wanted("a"), ckpts, fallback=ckpts[0] if ckpts else None)
    example = wanted("example")
    if example is not None and pair_ids_of is not None and example not in pair_ids_of(run):
        example = None
    return ViewState(run=run, ckpt=ckpt, a=a, example=example)


def to_query_params(state: ViewState, keys: Iterable[str] = PARAM_KEYS) -> dict[str, str]:
    """The URL parameters for `state` (only set fields, only `keys`)."""
    return {k: v for k in keys if (v := getattr(state, k)) is not None}
