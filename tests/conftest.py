import os

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
