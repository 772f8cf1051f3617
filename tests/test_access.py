"""Access (issue 6, part 3): the server listens on 127.0.0.1 unless told otherwise; names in a URL
resolve only inside the workspace; no pickled weights and no remote code without explicit flags;
uploads have a size limit; the job launcher passes arguments as a list, never through a shell.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path

import pytest
from cli_world import build_world

from did_core.__main__ import main
from did_core.errors import InputError
from did_core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["runs", "curves", "margins", "entropy", "compare", "example", "score", "lab"]
CONFIG = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


# --- the server's address and upload limit ----------------------------------------------------------------


def test_config_binds_localhost_and_limits_uploads():
    server = CONFIG["server"]
    assert server["address"] == "127.0.0.1"
    assert 0 < server["maxUploadSize"] <= 200  # MB
    assert server.get("enableXsrfProtection", True) and server.get("enableCORS", True)  # not switched off
    score_page = (ROOT / "pages" / "score.py").read_text()
    default = re.search(r'DID_MAX_UPLOAD_MB"\) or (\d+)', score_page)
    assert default and int(default.group(1)) == server["maxUploadSize"]  # the page's own check agrees
    assert "max_upload_size=MAX_UPLOAD_MB" in score_page


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                out.append(address)
    return out


@pytest.mark.slow
def test_a_launched_server_listens_on_localhost_only(tmp_path):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp")
    from streamlit_server import free_port, serve

    port = free_port()
    with serve(tmp_path / "ws", port=port):  # no --server.address: .streamlit/config.toml decides
        addresses = _listening(port)
    assert addresses == ["0100007F"], addresses  # 127.0.0.1, and nothing on 0.0.0.0 or ::


# --- names from the URL -----------------------------------------------------------------------------------

_opened: list[str] = []
_recording = False


def _audit(event: str, args: tuple) -> None:
    if _recording and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only while _recording


@pytest.fixture(scope="module")
def guarded_ws(tmp_path_factory) -> dict:
    """A synthetic workspace, and beside it a `secret/` tree shaped like a run (run.json, scores) that a
    path built from `?run=../../secret` would reach."""
    from did_core.synthetic_ws import make_synthetic_workspace

    root = tmp_path_factory.mktemp("guarded")
    ws = root / "ws"
    make_synthetic_workspace(ws, n_pairs=30, n_checkpoints=2, seed=0, tokens=True)
    secret = root / "secret"
    shutil.copytree(ws / "runs" / "synthetic", secret)
    shutil.copytree(ws / "scores", secret / "scores")
    (secret / "passwd").write_text("root:x:0:0")
    return {"ws": ws, "secret": secret}


FORGED = [
    {"run": "../../secret", "ckpt": "../secret", "b": "../../secret/passwd", "example": "../../secret/passwd"},
    {"run": "../secret", "ckpt": "/etc/passwd", "example": "%2e%2e%2fsecret"},
    {"run": str(Path("/") / "etc"), "ckpt": "checkpoint-100/../../secret", "example": "\x00"},
    {"run": "synthetic/../../secret", "ckpt": "~", "b": "..", "example": "0/../../secret"},
]


@pytest.mark.parametrize("params", FORGED, ids=[p["run"] for p in FORGED])
def test_forged_url_names_read_nothing_outside_the_workspace(monkeypatch, guarded_ws, params):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    global _recording
    monkeypatch.setenv("DID_WORKSPACE", str(guarded_ws["ws"]))
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    _opened.clear()
    _recording = True
    try:
        for page in PAGES:
            at.query_params.clear()
            at.query_params.update(params)
            at.switch_page(f"pages/{page}.py").run()
            assert not at.exception, (page, [e.value for e in at.exception])
            if page not in ("score", "lab"):
                assert at.query_params.get("run") == "synthetic", page  # fell back to a real run
    finally:
        _recording = False
    assert _opened  # the hook saw the pages' own reads
    secret = str(guarded_ws["secret"].resolve())
    leaked = [p for p in _opened if str(Path(p).resolve()).startswith(secret) or p.startswith("/etc")]
    assert not leaked, leaked[:5]


def test_workspace_readers_refuse_names_that_leave_it(guarded_ws):
    ws = Workspace(guarded_ws["ws"])
    for name in ["../../secret", "../secret", "/etc", "..", ".", "", "a/b", "a\\b", "x\x00y", " synthetic"]:
        with pytest.raises(InputError):
            ws.run(name)
    for fp in ["../x", "/etc/passwd", "..", "abc", "0" * 8 + "/.."]:
        with pytest.raises(InputError):
            ws.score_dir(fp)
        with pytest.raises(InputError):
            ws.dataset_path(fp)
    with pytest.raises(InputError):
        ws.tokens("synthetic", "../../secret")
    from did_ui import jobs

    assert jobs.info(guarded_ws["ws"], "../../secret") is None
    assert jobs.info(guarded_ws["ws"], "/etc") is None


def test_a_symlinked_run_pointing_outside_is_refused(guarded_ws, tmp_path):
    ws_root = tmp_path / "ws"
    shutil.copytree(guarded_ws["ws"], ws_root)
    (ws_root / "runs" / "escape").symlink_to(guarded_ws["secret"], target_is_directory=True)
    with pytest.raises(InputError, match="outside the workspace"):
        Workspace(ws_root).run("escape")


# --- model code and weights ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("access-world"), n_pairs=4)


class _Sentinel:
    """Unpickling this creates a file: proof that pickled code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _check_refused(args: list[str], capsys) -> str:
    code = main(args)
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_pickled_weights_never_unpickled_without_the_flag(world, tmp_path, capsys):
    model = tmp_path / "pickled"
    shutil.copytree(world["ref"], model)
    (model / "model.safetensors").unlink()
    sentinel = tmp_path / "PICKLE_RAN"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Sentinel(str(sentinel))}))
    line = _check_refused(["score", "--data", str(world["data"]), "--ref", str(world["ref"]), "--policy",
                           str(model), "--workspace", str(tmp_path / "ws")], capsys)
    assert "--allow-pickle" in line and not sentinel.exists()


def test_remote_code_never_runs_without_the_flag(world, tmp_path, capsys):
    model = tmp_path / "remote"
    shutil.copytree(world["ref"], model)
    sentinel = tmp_path / "REMOTE_CODE_RAN"
    code = f"open({str(sentinel)!r}, 'w').close()\nfrom transformers import LlamaConfig, LlamaForCausalLM\n"
    (model / "configuration_evil.py").write_text(code + "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n")
    (model / "modeling_evil.py").write_text(code + "from .configuration_evil import EvilConfig\n"
                                            "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                               "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (model / "config.json").write_text(json.dumps(config))
    t0 = time.time()
    line = _check_refused(["score", "--data", str(world["data"]), "--ref", str(world["ref"]), "--policy", str(model),
                    "--workspace", str(tmp_path / "ws")], capsys)
    assert not sentinel.exists() and "trust" in line.lower(), line
    assert time.time() - t0 < 30  # no interactive "trust this code? [y/N]" prompt waiting for a timeout


# --- the job launcher -------------------------------------------------------------------------------------

HOSTILE_ARGS = ["data; rm -rf ~ #.jsonl", "$(touch PWNED_SUBST)", "`touch PWNED_TICK`", "a && touch PWNED_AND",
                "x' \"y\" | z > PWNED_REDIRECT", "line\nbreak", "--not-a-flag", "*"]


def test_no_shell_anywhere_in_the_app():
    for path in [ROOT / "app.py", *ROOT.glob("did_core/*.py"), *ROOT.glob("did_ui/*.py"), *ROOT.glob("pages/*.py")]:
        text = path.read_text()
        assert "shell=True" not in text and "os.system(" not in text and "os.popen(" not in text, path


def test_score_argv_keeps_each_hostile_value_as_one_element():
    from did_ui import job_argv

    for value in HOSTILE_ARGS:
        argv = job_argv.score_argv(value, value, workspace=value, policies=[value, "b"])
        assert argv[argv.index("--data") + 1] == value and argv[argv.index("--ref") + 1] == value
        assert argv[argv.index("--workspace") + 1] == value and argv[argv.index("--policy") + 1] == value
        run_argv = job_argv.score_argv(value, "r", workspace="w", run_dir=value)
        assert run_argv[run_argv.index("--run") + 1] == value


def test_job_launcher_passes_arguments_verbatim(tmp_path, monkeypatch):
    """Through jobs.start → the wrapper process → the command: the argv the command receives is the list
    the page built, element for element, and no shell ever interprets a value."""
    from did_ui import job_argv, jobs

    monkeypatch.chdir(tmp_path)
    argv = job_argv.score_argv(HOSTILE_ARGS[0], HOSTILE_ARGS[1], workspace=str(tmp_path / "ws"), policies=HOSTILE_ARGS[2:])
    echo = "import json, sys; print('ARGV=' + json.dumps(sys.argv[1:]))"
    job_id = jobs.start(tmp_path / "ws", [sys.executable, "-c", echo, *argv[4:]], kind="score", cwd=str(tmp_path))
    deadline = time.time() + 30
    while (info := jobs.info(tmp_path / "ws", job_id)).status == "running" and time.time() < deadline:
        time.sleep(0.1)
    assert info.status == "done", info
    log = (tmp_path / "ws" / "jobs" / job_id / "log.txt").read_text()
    received = json.loads(log.split("ARGV=", 1)[1].splitlines()[0])
    assert received[:-2] == argv[4:]  # verbatim, then the progress file jobs.start gives every command
    assert received[-2:] == ["--progress-json", str(tmp_path / "ws" / "jobs" / job_id / "progress.jsonl")]
    assert received[received.index("--data") + 1] == HOSTILE_ARGS[0]
    assert not list(tmp_path.glob("PWNED*")) and not list(ROOT.glob("PWNED*"))
