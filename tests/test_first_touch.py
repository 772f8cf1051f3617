"""The dashboard's process stops NumPy's huge-page requests (did_ui.data.fast_first_touch)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("streamlit")
from app_tools import ROOT  # noqa: E402

from did_ui import data  # noqa: E402


@pytest.mark.parametrize("env, skips", [(None, True), ("1", False), ("0", True)])
def test_the_dashboard_stops_numpys_huge_page_requests_unless_the_user_chose(env, skips):
    """data.fast_first_touch, as app.py calls it: NumPy's madvise(MADV_HUGEPAGE) is off in the
    dashboard's process by default, and $NUMPY_MADVISE_HUGEPAGE (NumPy's own switch) wins when set.
    In a fresh interpreter: NumPy's default is on (Linux), so the off case shows the call did it."""
    code = ("from numpy._core.multiarray import _get_madvise_hugepage as g; before = g(); "
            "from did_ui import data; said = data.fast_first_touch(); print(before, said, g())")
    run_env = {k: v for k, v in os.environ.items() if k != data.HUGEPAGE_ENV}
    if env is not None:
        run_env[data.HUGEPAGE_ENV] = env
    out = subprocess.run([sys.executable, "-c", code], env=run_env, cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    before, said, after = (w == "True" for w in out)
    assert said is skips and after is (not skips)
    if env is None:
        assert before, "NumPy's own default asks for huge pages: the call is what turned it off"
    assert "data.fast_first_touch()" in (ROOT / "app.py").read_text().split("data.warm_up")[0]
