"""The one module with Streamlit caching: `st.cache_resource` for the `Workspace` handle and the big
per-run tables (`raw_pairs`, `pairs`, `pairs_per_token`, `entropy_table`, `dataset`: held once per
server, see `_held`), `st.cache_data` for the smaller view models every page reads.

Every cached table is keyed by (workspace root, run, `version`), where `version` changes when a
run's `run.json` is rewritten (a finished scoring job), so new results show without a restart; one
key per view of a run (`view_version`: the run's primary numerics has no suffix), so the picker and
the pages share one copy of each table. Pages call these functions and nothing else of `did_core`.

It is long (over 350 lines) on purpose: every cached reader of the dashboard is here, each a few
lines over `did_core` and `views`, so that what is cached, on what key and for how long is decided
in one file; splitting it by page would spread the cache keys and their invalidation rule.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from did_core import ches
from did_core.config import default_workspace
from did_core.manifest import RunManifest
from did_ui import views


def workspace_root() -> str:
    """`config.default_workspace()` ($DID_WORKSPACE, else ./workspace; docs/REFERENCE.md §6), absolute."""
    return str(default_workspace().expanduser().resolve())


def version(root: str) -> str:
    """A cheap token that changes whenever a run is added, removed or rewritten (keys the run list)."""
    runs = Path(root) / "runs"
    try:
        parts = sorted(f"{p.name}:{(p / 'run.json').stat().st_mtime_ns}" for p in runs.iterdir() if (p / "run.json").is_file())
    except OSError:
        return "none"
    return "|".join(parts) or "empty"


def run_version(root: str, run: str) -> str:
    """A cheap token that changes whenever this run is rewritten: every writer (score, sample) replaces
    its run.json last. It keys the run's cached views, so scoring one run leaves every other run's
    views cached. A live run (did_core/live_run.py) rewrites it at every step, seconds apart; the inode
    and size are in the token too, so two rewrites within one tick of the file system's clock differ."""
    try:
        st_ = (Path(root) / "runs" / run / "run.json").stat()
    except OSError:
        return "none"
    return f"{st_.st_mtime_ns}.{st_.st_ino}.{st_.st_size}"


NUMERICS_SEP = "~"


def view_version(root: str, run: str, numerics: str | None = None) -> str:
    """The cache key of a run's views in `numerics`: `run_version`, plus `~numerics` unless that is the
    run's primary — so every cached table below is keyed by the numerics it shows without each
    function taking one more argument, and the run's primary view has one key, `run_version`'s, the
    one the picker reads checkpoints and pair ids with (not two copies of every table)."""
    return numerics_version(root, run, run_version(root, run), numerics)


def numerics_version(root: str, run: str, base: str, numerics: str | None) -> str:
    """`view_version` of the run version `base`: `base` for the run's primary numerics (or None),
    else `base~numerics`."""
    if not numerics or (base != "none" and numerics == workspace(root).numerics(run_manifest(root, run, base))[0]):
        return base
    return f"{base}{NUMERICS_SEP}{numerics}"


def numerics_of(ver: str) -> str | None:
    """The numerics a cache key asks for (None: the run's primary)."""
    return ver.partition(NUMERICS_SEP)[2] or None


@st.cache_resource(show_spinner=False)
def workspace(root: str):
    """The `did_core.workspace.Workspace` for `root` (one per server process)."""
    from did_core.workspace import Workspace

    return Workspace(root)


@st.cache_data(show_spinner=False, max_entries=8)
def run_names(root: str, ver: str) -> list[str]:
    if ver == "none":
        return []
    return list(workspace(root).run_names())


@st.cache_data(show_spinner=False, max_entries=32)
def run_manifest(root: str, run: str, ver: str) -> RunManifest:
    """`ws.run(run)`: the run's manifest (a frozen `RunManifest`, so the cached copy is never changed)."""
    return workspace(root).run(run)


def _held(fn):
    """`fn`'s frame held once per server process (`st.cache_resource`, the 4 latest keys, as the
    `st.cache_data` it replaces kept), not pickled into `st.cache_data` and unpickled into a new copy
    on every hit (0.2-0.3 s each at 60,000 pairs x 20 checkpoints). Every caller gets a shallow copy
    (`copy(deep=False)`, microseconds): under pandas' copy-on-write it shares the held data, and
    whatever a caller does to it (a column added, values set, the index renamed) changes only its
    copy, never the held frame other sessions read (tests/test_app.py checks that opening every page
    leaves them as they were). `raw_pairs.held` (and so on): the held frame itself, for that test."""
    held = st.cache_resource(show_spinner=False, max_entries=4)(fn)

    @functools.wraps(fn)
    def shared(*args) -> pd.DataFrame:
        return held(*args).copy(deep=False)

    shared.held = held
    return shared


@_held
def raw_pairs(root: str, run: str, ver: str) -> pd.DataFrame:
    """`ws.pairs(run, numerics)`: the stored numbers, one row per (pair, checkpoint), joined to the
    reference, in the numerics `ver` names (`view_version`); nothing derived."""
    return workspace(root).pairs(run, numerics_of(ver))


@_held
def pairs(root: str, run: str, ver: str) -> pd.DataFrame:
    """`ws.pairs(run)` with every derived per-pair column at the run's settings (views.with_derived;
    sequence sums)."""
    return views.with_derived(raw_pairs(root, run, ver), run_settings(root, run, ver).settings, "sum")


@_held
def pairs_per_token(root: str, run: str, ver: str) -> pd.DataFrame:
    """The same with every log-prob divided by its response's token count."""
    return views.with_derived(raw_pairs(root, run, ver), run_settings(root, run, ver).settings, "mean")


def numerics(root: str, run: str) -> list[str]:
    """The numerics the run was scored in, its primary (exact, when scored) first."""
    return workspace(root).numerics(run_manifest(root, run, run_version(root, run)))


@st.cache_data(show_spinner=False, max_entries=32)
def run_settings(root: str, run: str, ver: str):
    """The run's resolved settings (did_core.run_settings.ResolvedSettings), as run.json recorded them."""
    return workspace(root).run_settings(run_manifest(root, run, ver))


@st.cache_data(show_spinner=False, max_entries=8)
def precision_audit(root: str, run: str, ver: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per pair, per checkpoint) errors of the trainer numerics against the exact ones
    (did_core.audit); two empty tables when the run was not scored in both."""
    from did_core import audit

    m = run_manifest(root, run, ver)
    if set(workspace(root).numerics(m)) != {"exact", "trainer"}:
        return pd.DataFrame(), pd.DataFrame()
    base = ver.partition(NUMERICS_SEP)[0]
    per_pair = audit.audit_pairs(pairs(root, run, numerics_version(root, run, base, "exact")),
                                 pairs(root, run, numerics_version(root, run, base, "trainer")))
    return per_pair, audit.audit_summary(per_pair)


def table(root: str, run: str, ver: str, aggregation: str = "sum") -> pd.DataFrame:
    """The per-pair table, sequence sums or per-token means."""
    return pairs_per_token(root, run, ver) if aggregation == "mean" else pairs(root, run, ver)


@st.cache_data(show_spinner=False, max_entries=16)
def checkpoints(root: str, run: str, ver: str) -> list[str]:
    """The run's checkpoint names, ordered by step."""
    df = pairs(root, run, ver)
    return views.checkpoint_order(df) if len(df) else [c.name for c in run_manifest(root, run, ver).checkpoints]


@st.cache_data(show_spinner=False, max_entries=16)
def pair_ids(root: str, run: str, ver: str) -> frozenset[str]:
    return frozenset(pairs(root, run, ver)["pair_id"].unique().tolist())


@st.cache_data(show_spinner=False, max_entries=16)
def pair_id_list(root: str, run: str, ver: str) -> list[str]:
    """The run's pair ids in dataset order (for previous / next in the inspector)."""
    return pairs(root, run, ver)["pair_id"].drop_duplicates().tolist()


@st.cache_data(show_spinner=False, max_entries=16)
def summary(root: str, run: str, ver: str) -> pd.DataFrame:
    return views.checkpoint_summary(pairs(root, run, ver))


@st.cache_data(show_spinner=False, max_entries=16)
def curves(root: str, run: str, ver: str, aggregation: str) -> pd.DataFrame:
    """Long per-checkpoint statistics and the trainer's logged metrics (did_core.curves)."""
    m = run_manifest(root, run, ver)
    return views.curves(table(root, run, ver, aggregation), list(m.trainer_log_history))


@st.cache_data(show_spinner=False, max_entries=64)
def curve_frame(root: str, run: str, ver: str, aggregation: str, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return views.curve_frame(curves(root, run, ver, aggregation), metric)


@st.cache_data(show_spinner=False, max_entries=32)
def histograms(root: str, run: str, ver: str, column: str, aggregation: str = "sum") -> dict:
    return views.histograms(table(root, run, ver, aggregation), column)


@st.cache_data(show_spinner=False, max_entries=32)
def ref_margin_histogram(root: str, run: str, ver: str, aggregation: str = "sum") -> dict:
    df = table(root, run, ver, aggregation).drop_duplicates("pair_id").assign(model="reference")
    return views.histograms(df, "ref_log_margin")


@st.cache_data(show_spinner=False, max_entries=32)
def checkpoint_rows(root: str, run: str, ver: str, ckpt: str, aggregation: str = "sum") -> pd.DataFrame:
    """One checkpoint's per-pair rows (for scatters; 10,000 points)."""
    df = table(root, run, ver, aggregation)
    return df[df["model"] == ckpt].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=16)
def not_stored(root: str, run: str, ver: str) -> dict[str, str]:
    """{column: why} for the CHES / squeezing columns this run's stores lack in `ver`'s numerics."""
    return workspace(root).not_stored(run, numerics_of(ver))


@st.cache_data(show_spinner=False, max_entries=64)
def tokens_not_stored(root: str, run: str, ver: str, ckpt: str) -> dict[str, str]:
    """{column: why} for the per-token squeezing columns `example_tokens` leaves empty under `ckpt`."""
    try:
        return workspace(root).tokens_not_stored(run, ckpt, numerics_of(ver))
    except (FileNotFoundError, KeyError, ValueError):
        return {}


@st.cache_data(show_spinner=False, max_entries=32)
def ches_view(root: str, run: str, ver: str, ckpt: str, aggregation: str = "sum") -> dict:
    """CHES against Δ log π(y_w) at `ckpt` (did_core.ches): per-pair rows, Spearman ρ with its 95%
    bootstrap interval, displaced share per CHES quintile. aggregation "mean": ches_norm and the
    per-token Δ."""
    column, per_token = ("ches_norm", True) if aggregation == "mean" else ("ches", False)
    rows = ches.ches_vs_displacement(raw_pairs(root, run, ver), ckpt, column, per_token)
    x, y = rows["ches"].to_numpy(), rows["delta_logp_chosen"].to_numpy()
    return {"rows": rows, "rho": ches.spearman_interval(x, y, n_boot=1000),
            "quintiles": ches.displaced_by_quantile(x, y, n_bins=5)}


@st.cache_data(show_spinner=False, max_entries=16)
def ches_correlations(root: str, run: str, ver: str, aggregation: str = "sum") -> pd.DataFrame:
    """ρ(CHES, Δ log π(y_w)) with its interval at every checkpoint (did_core.ches.correlations)."""
    column, per_token = ("ches_norm", True) if aggregation == "mean" else ("ches", False)
    return ches.correlations(raw_pairs(root, run, ver), column, n_boot=1000, per_token=per_token)


@st.cache_data(show_spinner=False, max_entries=16)
def squeezing(root: str, run: str, ver: str) -> pd.DataFrame:
    """Mean top-1 probability and next-token entropy per model and side, the reference at step 0."""
    return ches.squeezing_curves(raw_pairs(root, run, ver))


@st.cache_data(show_spinner=False, max_entries=16)
def ordering(root: str, run: str, ver: str, aggregation: str = "sum") -> pd.DataFrame:
    return views.ordering(raw_pairs(root, run, ver), aggregation)


@st.cache_data(show_spinner=False, max_entries=16)
def compare(root: str, run: str, ver: str, a: str, b: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return views.compare(pairs(root, run, ver), a, b, run_settings(root, run, ver).settings)


@st.cache_data(show_spinner=False, max_entries=16)
def compare_runs(root: str, run_a: str, ver_a: str, a: str, run_b: str, ver_b: str, b: str
                 ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """`compare` with A from run `run_a` and B from `run_b` (runs on the same dataset and reference)."""
    def side(run: str, ver: str, model: str) -> dict:
        return {"df": pairs(root, run, ver), "model": model, "rs": run_settings(root, run, ver).settings,
                "label": views.run_label(run, model)}
    return views.compare_runs(side(run_a, ver_a, a), side(run_b, ver_b, b))


@_held
def entropy_table(root: str, run: str, ver: str) -> pd.DataFrame:
    return views.with_pair_entropy(pairs(root, run, ver))


@st.cache_data(show_spinner=False, max_entries=16)
def entropy_estimators(root: str, run: str, ver: str) -> dict[str, dict]:
    return views.entropy_estimators(pairs(root, run, ver))


@st.cache_data(show_spinner=False, max_entries=32)
def entropy_histogram(root: str, run: str, ver: str, estimator: str, column: str) -> dict:
    return views.histograms(entropy_table(root, run, ver), column)


@st.cache_data(show_spinner=False, max_entries=32)
def entropy_vs_displacement(root: str, run: str, ver: str, estimator: str) -> pd.DataFrame:
    return views.entropy_vs_displacement(entropy_table(root, run, ver), views.ESTIMATORS[estimator]["chosen"])


@st.cache_data(show_spinner=False, max_entries=32)
def entropy_rows(root: str, run: str, ver: str, estimator: str, ckpt: str) -> pd.DataFrame:
    df = entropy_table(root, run, ver)
    rows = df[df["model"] == ckpt]
    cols = ["pair_id", "log_ratio_chosen", "log_ratio_rejected"]
    return rows[cols].assign(entropy=rows[views.ESTIMATORS[estimator]["chosen"]].to_numpy()).reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=16)
def sequence_entropy(root: str, run: str, ver: str) -> pd.DataFrame:
    """Per (prompt, checkpoint) sequence-level DID entropies when the run has them: the demo's
    exact_did.parquet (exact over every response, and the K-sample estimates with intervals), else
    the samples `python -m did_core sample` registered in run.json."""
    manifest = run_manifest(root, run, ver)
    name = manifest.extra.get("exact_did")
    if not name:
        if not manifest.samples:
            return pd.DataFrame()
        from did_core import sample_job  # imports the tokenizer stack: only for runs that have samples

        return sample_job.sampled_entropy_summary(sample_job.read_samples(root, run))
    # Read here rather than through did_core.demo.exact_did: that module imports torch and
    # transformers (seconds), and this page must open in under one.
    from did_core.workspace import validate_name

    path = workspace(root).run_dir(run) / validate_name(str(name), "file name")
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


@st.cache_data(show_spinner=False, max_entries=16)
def sequence_entropy_by_step(root: str, run: str, ver: str) -> pd.DataFrame:
    return views.sequence_entropy_by_step(sequence_entropy(root, run, ver))


def pi_l_default(root: str, run: str, ver: str) -> str | None:
    """The model the run names as π_l (run.json `extra.pi_l`), if any."""
    pi_l = run_manifest(root, run, ver).extra.get("pi_l")
    return str(pi_l) if pi_l else None


@st.cache_data(show_spinner=False, max_entries=16)
def power_law(root: str, run: str, ver: str, ckpt: str, pi_l: str, aggregation: str = "sum") -> dict:
    """The power-law fit with checkpoint `ckpt` as π* and model `pi_l` as the rejected-response generator."""
    beta = run_manifest(root, run, ver).beta
    return views.power_law(raw_pairs(root, run, ver), ckpt, pi_l, float(beta) if beta else None, aggregation)


@_held
def dataset(root: str, run: str, ver: str) -> pd.DataFrame:
    """`ws.dataset(run)` indexed by pair_id (display text)."""
    df = workspace(root).dataset(run)
    return df.assign(pair_id=df["pair_id"].astype(str)).set_index("pair_id", drop=False)


@st.cache_data(show_spinner=False, max_entries=256)
def example_text(root: str, run: str, ver: str, pair_id: str) -> dict[str, str]:
    """One pair's prompt and responses as display text ({} for a pair the dataset lacks). A dataset
    file in row groups gives the pair's alone (milliseconds); an older file, one row group, is
    read whole once and held (`dataset`), since reading one pair would decode all of it anyway."""
    ws = workspace(root)
    if ws.dataset_row_groups(run) > 1:
        df = ws.dataset(run, pair_ids=[pair_id])
        df = df.set_index(df["pair_id"].astype(str), drop=False)
    else:
        df = dataset(root, run, ver)
    if pair_id not in df.index:
        return {}
    row = df.loc[pair_id]
    return {k: str(row[k]) for k in ("prompt", "chosen", "rejected") if k in row}


@st.cache_data(show_spinner=False, max_entries=256)
def example_across_checkpoints(root: str, run: str, ver: str, pair_id: str) -> pd.DataFrame:
    return views.example_across_checkpoints(pairs(root, run, ver), pair_id)


@st.cache_data(show_spinner=False, max_entries=256)
def example_tokens(root: str, run: str, ver: str, ckpt: str, pair_id: str) -> pd.DataFrame:
    """Per-token rows of one pair under one checkpoint (ref_logp and log_ratio included)."""
    try:
        return workspace(root).tokens(run, ckpt, pair_ids=[pair_id], numerics=numerics_of(ver)).reset_index(drop=True)
    except (FileNotFoundError, KeyError, ValueError):
        return pd.DataFrame()


def export_bytes(root: str, run: str, kind: str) -> bytes:
    """Download content through did_core.export, built when the button is pressed
    (st.download_button's callable): "csv"/"parquet" pairs tables, "trl" the dataset with TRL's
    ref_chosen_logps / ref_rejected_logps (Parquet keeps conversational message lists)."""
    from did_core import export

    table_ = export.trl_reference_table(root, run) if kind == "trl" else export.pairs_table(root, run)
    with tempfile.TemporaryDirectory() as tmp:
        # Parquet carries the run's settings and notes in its metadata; a CSV download has its
        # `numerics` column (the CLI's CSV export writes the metadata beside it).
        meta = export.export_metadata(root, run) if kind != "csv" else None
        out = export.write_table(table_, Path(tmp) / ("export.csv" if kind == "csv" else "export.parquet"), meta)
        return out.read_bytes()


@st.cache_data(show_spinner=False, max_entries=64)
def lab(settings: tuple[tuple[str, object], ...]) -> dict:
    """The exact synthetic lab for one slider setting: its trajectory table, what π* would do,
    and the final distributions over the support (did_core.lab, computed exactly)."""
    from did_core import lab as lab_core

    result = lab_core.run_lab(lab_core.LabConfig(**dict(settings)))
    world = result.world
    order = world.log_ref.argsort(descending=True)
    dists = pd.DataFrame({"item rank under π_ref": range(len(order)), "π_ref": world.log_ref[order].exp().tolist(),
                          "π*": world.log_target[order].exp().tolist(), "π_l": world.log_rejected[order].exp().tolist(),
                          "π (trained)": result.log_policy[-1][order].exp().tolist()})
    return {"history": pd.DataFrame(result.table()), "target": lab_core.target_summary(world), "dists": dists}


HUGEPAGE_ENV = "NUMPY_MADVISE_HUGEPAGE"


def fast_first_touch() -> bool:
    """Stop NumPy asking the kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)` on every
    array of 4 MB or more, NumPy's default on Linux) in the dashboard's process, unless the user set
    NumPy's own switch, $NUMPY_MADVISE_HUGEPAGE. Where huge pages are granted on request and cannot be
    had at once (fragmented memory, many virtual machines), each such request makes the kernel try to
    compact memory first: on the 2-core VM of the README's dashboard figures a fresh 400 MB array took 0.90 s with
    the request and 0.13 s without, and the first open of a 60,000-pair run's Runs page read its tables
    in 1.2 s instead of 0.5 s (pages opened again reuse the memory and do not change). Returns whether
    NumPy now skips the request (NumPy's own getter says); idempotent."""
    try:
        from numpy._core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
    except ImportError:  # a NumPy without the switch: nothing to turn off
        return False
    if HUGEPAGE_ENV not in os.environ:  # set: the user's choice, which NumPy read at import
        _set_madvise_hugepage(False)
    return not _get_madvise_hugepage()


_warming: set[str] = set()
LAB_WARM_DELAY_S = 8.0
"""The lab warm-up waits for a moment with no script running, at most this long."""


def _wait_for_a_pause(limit_s: float, quiet_s: float = 0.2) -> None:
    """Return once no script run of this server has been in progress for `quiet_s`, or after `limit_s`."""
    from did_ui import pausing

    deadline, quiet_since = time.monotonic() + limit_s, None
    while (now := time.monotonic()) < deadline:
        if pausing.pages_running():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return
        time.sleep(0.05)


def warm_up(root: str, again: bool = False) -> None:
    """Once per server process and workspace: fill the caches of the default run's views in a
    background thread, so the first visit to each page reads memory, not Parquet. Runs no `st.*`
    command and needs no script context: `st.cache_data` fills the server's shared cache from any
    thread (tests/test_app.py checks that the warm-up fills it and logs no context warning).
    `again`: even when this process warmed `root` before."""
    if (root in _warming and not again) or os.environ.get("DID_WARM_UP") == "0":
        return
    if not run_names(root, version(root)):
        return
    _warming.add(root)
    threading.Thread(target=_warm, args=(root,), name="did-warm-up", daemon=True).start()


def _warm(root: str) -> None:
    try:
        for run in run_names(root, version(root))[:1]:
            ver = run_version(root, run)
            ckpts = checkpoints(root, run, ver)
            summary(root, run, ver)
            for metric in (*views.CURVE_QUANTITIES, *views.SHARE_QUANTITIES):
                curve_frame(root, run, ver, "sum", metric)
            checkpoint_rows(root, run, ver, ckpts[-1])
            histograms(root, run, ver, "log_margin")
            ref_margin_histogram(root, run, ver)
            ordering(root, run, ver)
            for est in entropy_estimators(root, run, ver):
                entropy_vs_displacement(root, run, ver, est)
                entropy_rows(root, run, ver, est, ckpts[-1])
            if len(ckpts) > 1:
                compare(root, run, ver, ckpts[-1], ckpts[0])
            dataset(root, run, ver)
        # Last: the lab's first call imports torch, ~2 s of CPU once per process; pay it here, not on
        # the lab page, but not while a page's script runs (an import holds the GIL: started with the
        # first visit, it made that load 0.5 s slower; bench/load_test.py).
        _wait_for_a_pause(LAB_WARM_DELAY_S)
        lab(tuple((k, v) for k, v in views.LAB_DEFAULTS.items()))
    except Exception:  # noqa: BLE001 — a failed warm-up only means the page computes on open; said in the log
        _warming.discard(root)
        logging.getLogger(__name__).warning("the cache warm-up of %s failed; pages compute on open", root,
                                            exc_info=True)


def score_preflight(source: str, reference: str, policies: list[str], run_dir: str | None,
                    overrides: dict) -> tuple[dict[str, str], object]:
    """did_core.plan.preflight: what a scoring job would refuse, before it starts (not cached: the
    files may change between two presses)."""
    from did_core.plan import preflight

    return preflight(source, reference, policies=policies, run_dir=run_dir, overrides=overrides)


def default_run_name(reference: str, policies: list[str], run_dir: str | None, source: str) -> str:
    """The name the CLI would give the run (did_core.plan.default_run_name)."""
    from did_core.config import ModelSpec
    from did_core.plan import default_run_name as name

    specs = [ModelSpec(name=p, path=p) for p in policies] or [ModelSpec(name="run", path=run_dir or "run")]
    return name(ModelSpec(name="ref", path=reference or "ref", role="reference"), specs, run_dir, source or "data")
