import os
from pathlib import Path

import pytest
import torch

# Two shared cores: one intra-op thread keeps tests predictable and lets pytest run beside other work.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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
