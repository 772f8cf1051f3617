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
    "test_jobs", "test_runs_page", "test_score_page", "test_access", "test_callback", "test_sweep",
    "test_memory", "test_standby",
}
"""Whole modules in the `slow` tier; the fast tier (`scripts/test.sh --fast`, `pytest -m "not slow"`) is
the unit layer: pure functions, the engine's parity with naive loops, the store, the selection logic."""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tokenizer():
    from did_core.tiny import build_tokenizer

    return build_tokenizer(merges=[("a", "b"), ("ab", "c"), ("t", "h"), ("th", "e")])


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory) -> str:
    """The embedded demo built once per session at the reduced `DemoConfig.fast()` size (real TRL runs);
    `DID_TEST_DEMO_WS=DIR` reuses a full build instead."""
    env = os.environ.get("DID_TEST_DEMO_WS")
    if env and Path(env, "runs").is_dir():
        return env
    from did_core.demo import DemoConfig, build_demo

    root = tmp_path_factory.mktemp("demo")
    build_demo(root, config=DemoConfig.fast())
    return str(root)
