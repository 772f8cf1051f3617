"""Command line: `python -m did_core score | export | demo | sample` (docs/REFERENCE.md §6).

A thin wrapper over the typed functions the dashboard calls. Bad input ends with exit status 2 and
one `error:` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from did_core import run_settings
from did_core.config import default_workspace

EXIT_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: a usage error is one `error:` line on stderr, exit 2.

    argparse's own `error` prints the whole usage block and then `<prog>: error: ...`; a caller (the
    dashboard's job launcher, a script) reads one line that starts with `error:`, as for bad input.
    Used for the subcommands too (`parser_class`), so `score --dtype float7` reads the same.
    """

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(message.split())
        self.exit(EXIT_INPUT, f"error: {message} (see `{self.prog} --help`)\n")


def _add_score(sub, ws_default: str) -> None:
    """The `score` command's options (the run's settings come from run_settings.FIELDS)."""
    s = sub.add_parser("score", help="score a preference dataset with a reference and checkpoints")
    s.add_argument("--data", required=True, help="JSONL/JSON/CSV/Parquet file, save_to_disk folder or hub id")
    s.add_argument("--ref", required=True, help="reference model: HF dir, hub id, PEFT adapter dir or .gguf")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--policy", nargs="+", help="checkpoints to score (same forms as --ref)")
    # `--run-dir` is the same option under another name: torchrun's own parser rejects `--run` as an
    # ambiguous abbreviation of its `--run-path`, so under torchrun write `--run-dir`.
    g.add_argument("--run", "--run-dir", dest="run",
                   help="a TRL output dir: its checkpoint-* folders are scored in step order")
    s.add_argument("--pi-l", default=None, metavar="MODEL",
                   help="a model of the rejected-response generator (π_l), scored too and recorded for the "
                        "paper's power-law fit")
    s.add_argument("--workspace", default=ws_default, help="results folder (default: $DID_WORKSPACE or ./workspace)")
    s.add_argument("--name", help="run name in the workspace (default: from the run folder and dataset)")
    s.add_argument("--limit", type=int, default=None, help="score only the first N pairs")
    s.add_argument("--numerics", default="auto", choices=["auto", "exact", "trainer", "both"],
                   help="exact: float32 forward, float64 sums; trainer: the forward as the trainer ran it "
                        "(its autocast, batches and sums), which reproduces its logged metrics; both; "
                        "auto (default): both when the trainer ran in bf16/fp16, else exact")
    rs = s.add_argument_group("the run's settings (each defaults to the trainer's, from the run folder; "
                              "a value given here is recorded and shown as an override)")
    run_settings.add_cli_options(rs)
    s.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights and compute dtype of the exact numerics (auto: float32)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--token-level", action=argparse.BooleanOptionalAction, default=True,
                   help="compute per-token DID entropy (default: on)")
    s.add_argument("--token-budget", type=int, default=None,
                   help="padded tokens per forward batch (default: 512 on CPU, 16384 on CUDA)")
    s.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory the job may hold, e.g. 16GB (default: 90%% of free memory, shared by torchrun's "
                        "local ranks); it holds the reference and one checkpoint at a time")
    s.add_argument("--column-map", default=None, help='JSON rename map, e.g. \'{"question": "prompt"}\'')
    s.add_argument("--allow-pickle", action="store_true", help="allow pickled .bin weights (unsafe)")
    s.add_argument("--trust-remote-code", action="store_true", help="run model code from the model dir (unsafe)")
    s.add_argument("--progress-json", default=None, help="append JSON-lines progress records to this file")
    s.add_argument("--chunk-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # the fault tests' hook


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m did_core", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ws_default = str(default_workspace())

    _add_score(sub, ws_default)

    e = sub.add_parser("export", help="export stored results")
    e.add_argument("--workspace", default=ws_default)
    e.add_argument("--out", required=True, help="FILE.csv, FILE.parquet or FILE.jsonl")
    e.add_argument("--kind", default="pairs", choices=["pairs", "tokens", "trl", "filtered"],
                   help="pairs: one row per (pair, model); tokens: per response token; "
                        "trl: the dataset with TRL's ref_chosen_logps/ref_rejected_logps; "
                        "filtered: the dataset without its top --drop-top-ches %% CHES pairs (TRL's format)")
    e.add_argument("--drop-top-ches", type=float, default=None, metavar="Q",
                   help="with --kind filtered: the percentage of pairs to drop, highest CHES first (0-100)")
    e.add_argument("--run", default=None, help="run name (default: every run)")
    e.add_argument("--numerics", default=None, choices=["exact", "trainer"],
                   help="only these numerics (default: pairs in every numerics a run has, one row each; "
                        "tokens in the run's primary; trl in the trainer's when scored)")

    m = sub.add_parser("sample", help="sample K responses per prompt for sequence-level DID entropy")
    m.add_argument("--workspace", default=ws_default)
    m.add_argument("--run", required=True, help="a scored run in the workspace")
    m.add_argument("--model", nargs="+", default=None, help="checkpoint names (default: the last)")
    m.add_argument("--k", type=int, default=32, help="samples per prompt (the paper: 32)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--proposal", default="policy", choices=["policy", "reference"])
    m.add_argument("--max-new-tokens", type=int, default=128)
    m.add_argument("--limit", type=int, default=64, help="prompts sampled (first N pairs)")
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    m.add_argument("--allow-pickle", action="store_true")
    m.add_argument("--progress-json", default=None)

    d = sub.add_parser("demo", help="build the embedded demo workspace (tiny models, real DPO runs)")
    d.add_argument("--workspace", default=ws_default)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--progress-json", default=None)
    return p


class _Progress:
    """A progress bar on stderr (pairs/s, ETA) and optional JSON-lines records for the dashboard."""

    def __init__(self, json_path: str | None):
        self.json_path = json_path
        self.t0 = time.perf_counter()
        self.stage: str | None = None
        self.stage_t0 = self.t0
        self.first_done = 0
        self.last_print = 0.0
        self.bar_open = False

    def __call__(self, stage: str, done: int, total: int, **extra) -> None:
        now = time.perf_counter()
        if stage != self.stage:
            self.stage, self.stage_t0, self.first_done = stage, now, done
        elapsed = now - self.stage_t0
        rate = (done - self.first_done) / elapsed if elapsed > 0 and done > self.first_done else None
        eta = (total - done) / rate if rate else None
        if self.json_path:
            rec = {"stage": stage, "done": done, "total": total, "rate": rate, "eta_s": eta, "time": time.time()}
            with open(self.json_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec | extra) + "\n")
        # On a terminal: a live bar for every stage. Otherwise (logs, CI, the dashboard's launcher):
        # a plain line every 5 s of scoring only, so an input error stays the only line on stderr.
        tty = sys.stderr.isatty()
        if (tty and now - self.last_print > 0.2) or (not tty and stage == "score" and now - self.last_print > 5):
            self.last_print = now
            width = 30
            fill = int(width * done / total) if total else width
            rate_s = f"{rate:7.1f} pairs/s" if rate and stage == "score" else ""
            eta_s = f"ETA {eta:5.0f}s" if eta is not None else ""
            line = f"{stage:>8} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} {rate_s} {eta_s}"
            sys.stderr.write(f"\r{line}  " if tty else line + "\n")
            self.bar_open = tty
            sys.stderr.flush()
        if done >= total and self.bar_open:
            sys.stderr.write("\n")
            self.bar_open = False

    def finish(self, **extra) -> None:
        if self.json_path:
            with open(self.json_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": time.time()} | extra) + "\n")


def _cmd_score(a: argparse.Namespace, progress: _Progress) -> None:
    from did_core.config import ScoreSettings
    from did_core.errors import InputError
    from did_core.memory import parse_size
    from did_core.score import run_score

    try:
        settings = ScoreSettings(dtype=a.dtype, device=a.device, token_level=a.token_level,
                                 token_budget=a.token_budget, limit=a.limit, allow_pickle=a.allow_pickle,
                                 trust_remote_code=a.trust_remote_code,
                                 max_memory=parse_size(a.max_memory) if a.max_memory else None)
        overrides = run_settings.overrides_from_namespace(a)
    except ValueError as exc:
        raise InputError(f"bad setting: {exc}") from None
    column_map = None
    if a.column_map:
        try:
            column_map = json.loads(a.column_map)
            assert isinstance(column_map, dict) and all(isinstance(v, str) for v in column_map.values())
        except (json.JSONDecodeError, AssertionError):
            raise InputError(f"--column-map must be a JSON object of column renames, got {a.column_map!r}") from None
    try:
        stats = run_score(a.data, a.ref, policies=a.policy, run_dir=a.run, workspace=a.workspace, settings=settings,
                          overrides=overrides, numerics=a.numerics, name=a.name, column_map=column_map,
                          progress=progress, pi_l=a.pi_l, on_chunk=_chunk_delay(a.chunk_delay))
    finally:
        _end_process_group()
    trunc = stats.truncation
    print(f"run {stats.run}: {stats.n_pairs} pairs, {stats.chunks_computed}/{stats.chunks_total} chunks computed "
          f"(the rest were stored), numerics {' + '.join(stats.numerics)}, workspace {a.workspace}")
    print(stats.memory, file=sys.stderr)
    for line in stats.overrides:
        print(f"override: {line}", file=sys.stderr)
    for line in stats.notes:
        print(f"note: {line}", file=sys.stderr)
    if stats.dtype_check:
        c = stats.dtype_check
        print(f"{c['dtype']} check against float32 on {c['pairs']} pairs of {c['model']}: largest log-prob error "
              f"{c['max_abs_logp_error']:.2e} nats, largest log-ratio error {c['max_abs_log_ratio_error']:.2e} nats")
    if trunc.get("truncated_responses"):
        print(f"note: {trunc}", file=sys.stderr)
    progress.finish(stage="done", run=stats.run, chunks_computed=stats.chunks_computed)


def _chunk_delay(seconds: float):
    """The fault tests' hook (`--chunk-delay`, not in --help): sleep after each stored chunk, so that a
    kill -9 lands between chunks; handed to the job as its on_chunk callback."""
    return (lambda c: time.sleep(seconds)) if seconds > 0 else None


def _end_process_group() -> None:
    """Under torchrun, tear down the process group run_score made: a rank that exits with gloo's
    threads still running can abort ("terminate called without an active exception", seen once in
    CI on a 2-rank run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _cmd_export(a: argparse.Namespace) -> None:
    from did_core.errors import InputError
    from did_core.export import export, export_filtered, export_metadata, export_trl_reference, not_stored_notes

    if (a.drop_top_ches is not None) != (a.kind == "filtered"):
        raise InputError("--drop-top-ches Q goes with --kind filtered (and --kind filtered needs it)")
    if a.kind == "trl":
        path = export_trl_reference(a.workspace, a.run, a.out, numerics=a.numerics)
    elif a.kind == "filtered":
        path = export_filtered(a.workspace, a.run, a.out, a.drop_top_ches)
    else:
        path = export(a.workspace, a.out, kind=a.kind, run=a.run, numerics=a.numerics)
        if a.kind in ("pairs", "tokens"):
            for line in not_stored_notes(export_metadata(a.workspace, a.run), a.kind):
                print(f"note: {line}", file=sys.stderr)
    print(f"wrote {path}")


def _cmd_sample(a: argparse.Namespace, progress: _Progress) -> None:
    from did_core.config import ScoreSettings
    from did_core.errors import InputError
    from did_core.sample_job import SampleSettings, run_sample

    try:
        sample = SampleSettings(k=a.k, seed=a.seed, proposal=a.proposal, max_new_tokens=a.max_new_tokens,
                                limit=a.limit)
        settings = ScoreSettings(device=a.device, allow_pickle=a.allow_pickle)
    except ValueError as exc:
        raise InputError(f"bad setting: {exc}") from None
    entries = run_sample(a.workspace, a.run, models=a.model, sample=sample, settings=settings, progress=progress)
    print(f"run {a.run}: samples stored for {', '.join(e['model'] for e in entries)}")
    progress.finish(stage="done", run=a.run)


def _cmd_demo(a: argparse.Namespace, progress: _Progress) -> None:
    from did_core.demo import build_demo

    t0 = time.perf_counter()
    build_demo(a.workspace, seed=a.seed, progress=progress)
    progress.finish(stage="done")
    print(f"demo workspace built in {time.perf_counter() - t0:.1f} s: {a.workspace}")


def _quiet_libraries() -> None:
    """Our own progress bar and `error:` line are the CLI's only stderr output: silence HF's bars and logs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()


OMP_WAIT_POLICY = "PASSIVE"
"""Idle OpenMP threads sleep instead of spinning. torch waits for its slowest thread at the end of
every parallel region; with one core busy with other work (another session: Linux's autogroup gives it
half the CPU), spinning waiters burned the job's share: SmolLM2-135M scored 16 HH pairs in 134.5 s
instead of 20.2 s, while on an idle machine PASSIVE cost 14.7 s against 14.2 s (README, "Figures").
Set before torch loads OpenMP; a value the user set is kept."""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    args = build_parser().parse_args(argv)
    from did_core.errors import InputError
    from did_core.workspace import Workspace

    _quiet_libraries()

    progress = _Progress(getattr(args, "progress_json", None))
    try:
        # Every command reads or writes the workspace: refuse one that cannot be a folder (an
        # existing file, or a path under one) before any work, not as a traceback after it.
        Workspace.check_root(args.workspace)
        if args.command == "score":
            _cmd_score(args, progress)
        elif args.command == "export":
            _cmd_export(args)
        elif args.command == "sample":
            _cmd_sample(args, progress)
        elif args.command == "demo":
            _cmd_demo(args, progress)
        return 0
    except InputError as exc:
        msg = str(exc).replace("\n", " ")
        progress.finish(stage="error", message=f"error: {msg}")
        print(f"\nerror: {msg}" if progress.bar_open else f"error: {msg}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            msg = f"no space left on device while writing {exc.filename or Path(args.workspace)}"
            print(f"error: {msg}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("\ninterrupted: finished chunks are kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
