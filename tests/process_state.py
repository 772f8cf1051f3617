"""What `did_core.demo.build_settings` changes for the whole process, in comparable form (shared by
tests/conftest.py's demo build and tests/test_demo.py)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch


def process_settings() -> dict:
    import datasets.utils.logging as ds_logging
    import transformers.utils.logging as hf_logging

    np_state = np.random.get_state()
    return {"threads": torch.get_num_threads(), "hf_verbosity": hf_logging.get_verbosity(),
            "hf_bars": hf_logging.is_progress_bar_enabled(), "ds_bars": ds_logging.is_progress_bar_enabled(),
            "warnings": list(warnings.filters), "random": random.getstate(),
            "numpy": (np_state[0], np_state[1].tobytes(), *np_state[2:]), "torch": torch.get_rng_state().numpy().tobytes()}
