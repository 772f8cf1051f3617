"""The command lines of the dashboard's jobs: `python -m did_core score|sample|demo …` as argument
lists (never a shell string), the one place the Score form's and the DID entropy page's choices
become CLI flags (docs/REFERENCE.md; the parser is did_core/__main__.py; the run settings' flags
come from `did_core.run_settings.overrides_to_argv`, the same table the parser is built from).
did_ui/jobs.py runs them. No streamlit here.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def score_argv(data: str, reference: str, *, workspace: str, policies: list[str] | None = None,
               run_dir: str | None = None, overrides: Mapping[str, Any] | None = None, numerics: str = "auto",
               limit: int | None = None, dtype: str = "auto", device: str = "auto", token_level: bool = True,
               name: str | None = None) -> list[str]:
    """The `python -m did_core score ...` argument list (docs/REFERENCE.md) for these choices.

    Run settings the user left to the trainer are absent from `overrides` and so from the command:
    the job reads them from the run folder, as the CLI does (`run_settings.overrides_to_argv`).
    """
    from did_core import run_settings

    if bool(policies) == bool(run_dir):
        raise ValueError("give either checkpoints (policies) or a TRL run folder, not both or neither")
    argv = [sys.executable, "-m", "did_core", "score", "--data", data, "--ref", reference]
    argv += ["--run", run_dir] if run_dir else ["--policy", *policies]  # type: ignore[list-item]
    argv += ["--workspace", workspace, "--dtype", dtype, "--device", device, "--numerics", numerics]
    if name:
        argv += ["--name", name]
    if limit:
        argv += ["--limit", str(int(limit))]
    argv += run_settings.overrides_to_argv(overrides or {})
    argv.append("--token-level" if token_level else "--no-token-level")
    return argv


def sample_argv(workspace: str, run: str, models: list[str], *, k: int = 32, limit: int = 64,
                proposal: str = "policy", seed: int = 0) -> list[str]:
    """`python -m did_core sample ...`: K responses per prompt for the sequence-level estimators."""
    return [sys.executable, "-m", "did_core", "sample", "--workspace", workspace, "--run", run, "--model", *models,
            "--k", str(int(k)), "--limit", str(int(limit)), "--proposal", proposal, "--seed", str(int(seed))]


def demo_argv(workspace: str) -> list[str]:
    """`python -m did_core demo …`: build the embedded demo into `workspace`."""
    return [sys.executable, "-m", "did_core", "demo", "--workspace", workspace]
