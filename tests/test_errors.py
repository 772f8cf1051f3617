"""The error contract (docs/REFERENCE.md §9): every bad input ends with exit status 2 and exactly one line on
stderr that starts with `error:` and says what and where, no traceback, and the workspace as it was.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_world import build_world, write_pairs

from did_core.__main__ import main
from did_core.tiny import build_tokenizer, tiny_llama

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_world(tmp_path_factory.mktemp("errworld"), n_pairs=6)
    bad = w["ref"].parent / "bad"
    bad.mkdir()
    # A checkpoint with another tokenizer (different merges -> different vocabulary).
    other_tok = build_tokenizer(alphabet="abcdeht .?xyz", merges=[("x", "y")])
    m = tiny_llama(len(other_tok), seed=3)
    m.save_pretrained(bad / "other_tok")
    other_tok.save_pretrained(bad / "other_tok")
    # Pickled weights only.
    pk = bad / "pickled"
    shutil.copytree(w["ref"], pk)
    sd = {k: v.clone() for k, v in tiny_llama(len(w["tokenizer"]), seed=0).state_dict().items()}
    (pk / "model.safetensors").unlink()
    torch.save(sd, pk / "pytorch_model.bin")
    # A model dir with a corrupt config.
    cc = bad / "corrupt_config"
    shutil.copytree(w["ref"], cc)
    (cc / "config.json").write_text("{not json")
    return w


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")} if root.exists() else {}


def _data_cases(d: Path) -> dict[str, Path]:
    """Bad dataset files; each must be refused with a one-line error."""
    rows = [json.dumps({"prompt": "ab", "chosen": "c", "rejected": "d"})]

    def w(name: str, text: str | bytes) -> Path:
        p = d / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p

    return {
        "missing column": w("missing.jsonl", json.dumps({"prompt": "a", "chosen": "b"}) + "\n"),
        "empty chosen": w("empty.jsonl", json.dumps({"prompt": "a", "chosen": "", "rejected": "b"}) + "\n"),
        "non-string rejected": w("nonstr.jsonl", json.dumps({"prompt": "a", "chosen": "b", "rejected": 3}) + "\n"),
        "null response": w("null.jsonl", json.dumps({"prompt": "a", "chosen": None, "rejected": "b"}) + "\n"),
        "truncated json line": w("trunc.jsonl", rows[0] + "\n" + rows[0][:17] + "\n"),
        "corrupt json file": w("corrupt.json", "[{\"prompt\": \"a\", "),
        "non-utf8 bytes": w("latin.jsonl", rows[0].encode() + b"\n{\"prompt\": \"\xff\xfe\"}\n"),
        "empty file": w("empty_file.jsonl", ""),
        "empty list": w("empty_list.json", "[]"),
        "unknown extension": w("data.xlsx", "whatever"),
        "binary with jsonl name": w("binary.jsonl", bytes(range(256)) * 4),
        "truncated gzip": w("trunc.jsonl.gz", gzip.compress(((rows[0] + "\n") * 50).encode())[:40]),
        "csv missing column": w("bad.csv", "prompt,chosen\na,b\n"),
        "corrupt parquet": w("bad.parquet", b"PAR1 not really parquet"),
        "duplicate ids": w("dup.jsonl", "".join(json.dumps({"id": 1, "prompt": "a", "chosen": "b", "rejected": "c"})
                                                + "\n" for _ in range(2))),
        "bad message list": w("msgs.jsonl", json.dumps({"prompt": [{"role": "user"}], "chosen": [
            {"role": "assistant", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]}) + "\n"),
        "missing data file": d / "does_not_exist.jsonl",
    }


def _model_cases(world) -> dict[str, list[str]]:
    bad = world["ref"].parent / "bad"
    return {
        "missing model path": ["--ref", str(bad / "nope"), "--policy", str(world["ref"])],
        "checkpoint with another tokenizer": ["--ref", str(world["ref"]), "--policy", str(bad / "other_tok")],
        ".bin without --allow-pickle": ["--ref", str(world["ref"]), "--policy", str(bad / "pickled")],
        "corrupt config.json": ["--ref", str(bad / "corrupt_config"), "--policy", str(world["ref"])],
        "run dir without checkpoints": ["--ref", str(world["ref"]), "--run", str(bad)],
        "negative beta": ["--ref", str(world["ref"]), "--policy", str(world["ref"]), "--beta", "-1"],
        "bad column map": ["--ref", str(world["ref"]), "--policy", str(world["ref"]), "--column-map", "[1,2]"],
        "path-like run name": ["--ref", str(world["ref"]), "--policy", str(world["ref"]), "--name", "../../etc"],
    }


def _check(args: list[str], ws: Path, capsys) -> str:
    before = _files(ws)
    code = main(args)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, (args, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert _files(ws) == before, "the workspace changed"
    return lines[0]


def test_corpus_has_at_least_20_cases(world, tmp_path):
    assert len(_data_cases(tmp_path)) + len(_model_cases(world)) >= 20


def test_bad_data_files(world, tmp_path, capsys):
    ws = tmp_path / "ws"
    main(["score", "--data", str(world["data"]), "--ref", str(world["ref"]), "--policy", str(world["ref"]),
          "--workspace", str(ws), "--name", "good", "--no-token-level"])  # a non-empty workspace to protect
    capsys.readouterr()
    for label, path in _data_cases(tmp_path).items():
        line = _check(["score", "--data", str(path), "--ref", str(world["ref"]), "--policy", str(world["ref"]),
                       "--workspace", str(ws)], ws, capsys)
        assert path.name in line or "row" in line or "column" in line, (label, line)


def test_bad_models_and_flags(world, tmp_path, capsys):
    ws = tmp_path / "ws"
    for label, extra in _model_cases(world).items():
        line = _check(["score", "--data", str(world["data"]), *extra, "--workspace", str(ws)], ws, capsys)
        assert len(line) > len("error: ") + 10, (label, line)


def test_unknown_export_extension(world, tmp_path, capsys):
    ws = tmp_path / "ws"
    main(["score", "--data", str(world["data"]), "--ref", str(world["ref"]), "--policy", str(world["ref"]),
          "--workspace", str(ws), "--name", "good", "--no-token-level"])
    capsys.readouterr()
    _check(["export", "--workspace", str(ws), "--out", str(tmp_path / "x.xlsx")], ws, capsys)


def test_real_subprocess_has_no_traceback(world, tmp_path):
    data = write_pairs(tmp_path / "ok.jsonl", 3)
    p = subprocess.run([sys.executable, "-m", "did_core", "score", "--data", str(data), "--ref",
                        str(tmp_path / "missing-model"), "--policy", str(world["ref"]), "--workspace",
                        str(tmp_path / "ws")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error: ") and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "ws").exists()


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "did_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "usage:" not in p.stderr
    return lines[0]


USAGE_CASES = {
    "unknown dtype": (["score", "--data", "d.jsonl", "--ref", "r", "--policy", "p", "--dtype", "float7"], "--dtype"),
    "beta not a number": (["score", "--data", "d.jsonl", "--ref", "r", "--policy", "p", "--beta", "notanumber"],
                          "--beta"),
    "missing required options": (["score", "--policy", "p"], "--data"),
    "policy and run together": (["score", "--data", "d", "--ref", "r", "--policy", "p", "--run", "x"], "--policy"),
    "unknown option": (["export", "--out", "x.csv", "--bogus"], "--bogus"),
    "unknown kind": (["export", "--out", "x.csv", "--kind", "everything"], "--kind"),
    "unknown subcommand": (["frobnicate"], "frobnicate"),
    "no subcommand": ([], "command"),
    "k not an integer": (["sample", "--run", "r", "--k", "many"], "--k"),
}


@pytest.mark.parametrize("label", list(USAGE_CASES))
def test_usage_errors_are_one_error_line(label):
    """argparse's own errors follow the contract too: no usage block, one `error:` line naming the
    option, exit 2."""
    args, mentions = USAGE_CASES[label]
    assert mentions in _one_error_line(_cli(*args)), label


@pytest.mark.parametrize("command", [[], ["score"], ["export"], ["sample"], ["demo"]])
def test_help_still_prints_usage_and_exits_0(command):
    p = _cli(*command, "--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: python -m did_core"), p.stderr
    assert p.stderr == ""


@pytest.mark.parametrize("below", [False, True])
def test_workspace_that_is_a_file_is_refused_before_any_work(world, tmp_path, below):
    """`--workspace FILE` (or a path under a file) used to end in a NotADirectoryError traceback once
    the models were loaded and scored; now one `error:` line before anything is read."""
    file = tmp_path / "notes.txt"
    file.write_text("not a workspace")
    ws = file / "sub" if below else file
    progress = tmp_path / "progress.jsonl"
    line = _one_error_line(_cli("score", "--data", str(world["data"]), "--ref", str(world["ref"]), "--policy",
                                str(world["ref"]), "--workspace", str(ws), "--progress-json", str(progress)))
    assert str(file) in line and "folder" in line, line
    assert file.read_text() == "not a workspace"
    stages = [json.loads(x).get("stage") for x in progress.read_text().splitlines()]
    assert stages == ["error"], stages  # no load / tokenize / score stage ever started
    for command in (["export", "--out", str(tmp_path / "x.csv")], ["sample", "--run", "r"], ["demo"]):
        _one_error_line(_cli(*command, "--workspace", str(ws)))
    assert not (tmp_path / "x.csv").exists()


def test_trl_export_of_a_workspace_with_several_runs_asks_for_run(tmp_path):
    """The README's `export --kind trl` example names the run; without `--run` a workspace of several
    runs is refused with one line that lists them, and `--run NAME` exports that run."""
    import pandas as pd

    from did_core.synthetic_ws import make_synthetic_workspace

    ws = tmp_path / "ws"
    for name in ("one", "two", "three"):
        make_synthetic_workspace(ws, n_pairs=5, n_checkpoints=1, tokens=False, run_name=name, seed=len(name))
    out = tmp_path / "with_ref_logps.jsonl"
    line = _one_error_line(_cli("export", "--workspace", str(ws), "--out", str(out), "--kind", "trl"))
    assert "3 runs" in line and "--run" in line and "two" in line, line
    assert not out.exists()
    p = _cli("export", "--workspace", str(ws), "--out", str(out), "--kind", "trl", "--run", "two")
    assert p.returncode == 0, p.stderr
    assert len(pd.read_json(out, lines=True)) == 5
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    trl_lines = [x for x in readme.splitlines() if "did_core export" in x and "--kind trl" in x]
    assert trl_lines and all("--run " in x for x in trl_lines), trl_lines
