"""RunSettings: read from a real TRL DPOConfig, resolved with a source per value, one definition for the
CLI, the job's argv and the Score form (the precision audit is tests/test_audit.py's)."""

from __future__ import annotations

import math

import pytest
import torch

from did_core import run_settings
from did_core.run_settings import FIELDS, RunSettings, from_training_args, resolve
from did_core.trl_run import read_training_args


def test_a_real_dpoconfig_is_read_field_by_field(tmp_path):
    from trl import DPOConfig

    cfg = DPOConfig(output_dir=str(tmp_path), beta=0.37, max_length=64, loss_type=["sigmoid", "sft"],
                    loss_weights=[1.0, 0.25], label_smoothing=0.05, per_device_eval_batch_size=3, use_cpu=True,
                    f_divergence_type="js_divergence", report_to="none")
    torch.save(cfg, tmp_path / "training_args.bin")  # what Trainer writes
    got = from_training_args(read_training_args(tmp_path / "training_args.bin"))
    assert got["beta"] == 0.37 and got["max_length"] == 64
    assert got["loss_type"] == ("sigmoid", "sft") and got["loss_weights"] == (1.0, 0.25)
    assert got["label_smoothing"] == 0.05 and got["eval_batch_size"] == 3
    assert got["f_divergence_type"] == "js_divergence"
    assert got["precision"] == "bf16"  # DPOConfig(bf16=None) → True, even with use_cpu
    assert got["truncation_mode"] == "keep_start" and got["pad_to_multiple_of"] is None
    fp32 = DPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none")
    torch.save(fp32, tmp_path / "b.bin")
    assert from_training_args(read_training_args(tmp_path / "b.bin"))["precision"] == "fp32"


def test_sources_and_notes():
    r = resolve({"beta": 0.5, "max_length": 256, "precision": "bf16"}, {"beta": 0.1}, origin="run/training_args.bin")
    assert r.settings.beta == 0.1 and r.sources["beta"] == "override"
    assert r.sources["max_length"] == "trainer" and r.sources["loss_type"] == "default"
    assert r.notes() == ["β 0.1 given; the trainer used 0.5"]
    rec = r.to_manifest()
    assert rec["beta"] == {"value": 0.1, "source": "override", "trainer": 0.5}
    assert rec["max_length"] == {"value": 256, "source": "trainer", "trainer": 256}
    back = run_settings.from_manifest(rec)
    assert back.settings == r.settings and back.sources == r.sources and back.notes() == r.notes()
    # no run folder: defaults shown as defaults, an override says so
    plain = resolve({}, {"max_length": 512})
    assert plain.sources["beta"] == "default" and plain.notes() == ["max length 512 given (no run folder; default 1024)"]
    # overriding the loss types drops the trainer's weights for its own types
    lw = resolve({"loss_type": ("sigmoid", "sft"), "loss_weights": (1.0, 0.2)}, {"loss_type": ("ipo",)})
    assert lw.settings.loss_weights is None and lw.sources["loss_weights"] == "default"
    assert RunSettings(loss_type=("ipo", "sft"), loss_weights=(0.5, 2.0)).loss_label() == "0.5·ipo + 2·sft"
    assert RunSettings(precision="bf16").default_numerics() == ("exact", "trainer")
    assert RunSettings().default_numerics() == ("exact",)


@pytest.mark.parametrize("bad", [{"beta": 0.0}, {"beta": math.nan}, {"max_length": 1}, {"precision": "fp8"},
                                 {"loss_type": ()}, {"loss_weights": (1.0, 2.0)}, {"eval_batch_size": 0},
                                 {"truncation_mode": "middle"}])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        RunSettings(**bad)


def test_cli_argv_and_form_share_one_definition():
    """Every field: a value goes through the job's argv (overrides_to_argv), the CLI's real parser and
    back (overrides_from_namespace) unchanged; the form parses text as the CLI does."""
    from did_core.__main__ import build_parser

    values = {"beta": 0.37, "max_length": None, "truncation_mode": "keep_end", "loss_type": ("ipo", "sft"),
              "loss_weights": (0.5, 2.0), "label_smoothing": 0.1, "f_divergence_type": "alpha_divergence",
              "f_alpha_divergence_coef": 0.3, "discopop_tau": 0.07, "precision": "fp16", "eval_batch_size": 3}
    assert set(values) == {f.name for f in FIELDS}
    argv = ["score", "--data", "d", "--ref", "r", "--run", "x", *run_settings.overrides_to_argv(values)]
    ns = build_parser().parse_args(argv)
    assert run_settings.overrides_from_namespace(ns) == values
    assert run_settings.overrides_from_namespace(build_parser().parse_args(argv[:7])) == {}  # absent = the trainer's
    for f in FIELDS:  # the form's text → the same value
        words = run_settings.format_value(f, values[f.name])[1:]
        assert run_settings.parse_value(f, " ".join(words)) == values[f.name]
    with pytest.raises(ValueError, match="--beta must be a number"):
        run_settings.parse_value(run_settings.FIELD_BY_NAME["beta"], "notanumber")


