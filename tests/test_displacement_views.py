"""AppTest of the views that explain displacement per example (issue 16): CHES on Log-margins, the
squeezing curves on Training curves, per-token squeezing on Example, and what each says for a run
scored before they were stored."""

from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from app_tools import metrics as _metrics  # noqa: E402
from app_tools import open_app as _app  # noqa: E402
from app_tools import open_page as _open  # noqa: E402
from app_tools import synthetic_workspace  # noqa: E402


@pytest.fixture(scope="module")
def synthetic_ws(tmp_path_factory) -> str:
    return synthetic_workspace(tmp_path_factory.mktemp("ws"))


def _values(arr) -> list:
    """A Plotly array as a list (the figure JSON may carry it base64-encoded)."""
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(arr["bdata"]), arr["dtype"]).tolist() if isinstance(arr, dict) else list(arr)


def _chart(at, key: str):
    import plotly.io

    found = [plotly.io.from_json(c.proto.spec) for c in at.get("plotly_chart") if key in c.proto.id]
    assert len(found) == 1, key
    return found[0]


def test_margins_ches_section_shows_the_rank_correlation_and_quintiles(monkeypatch, synthetic_ws):
    """Log-margins' CHES section: ρ(CHES, Δ log π(y_w)) at the selected checkpoint as did_core.ches computes
    it from the workspace, its interval around it, the quintile bars' shares and the scatter's points;
    every caption names the numerics."""
    import numpy as np

    from did_core import ches
    from did_core.workspace import Workspace

    at = _open(_app(monkeypatch, synthetic_ws), "margins")
    assert "CHES" in [s.value for s in at.subheader]
    pairs = Workspace(synthetic_ws).pairs("synthetic")
    cp = pairs[pairs["model"] == "checkpoint-300"]
    d = (cp["logp_chosen"] - cp["ref_logp_chosen"]).to_numpy()
    want = ches.spearman(cp["ches"].to_numpy(), d)
    m = _metrics(at)
    assert float(m["Spearman ρ(CHES, Δ log π(y_w))"].value) == pytest.approx(want, abs=5e-4)
    lo, hi = (float(x) for x in m["95% bootstrap interval"].value.strip("[]").split(","))
    assert lo <= want <= hi
    bars = _chart(at, "ches_quintiles")
    order = np.argsort(cp["ches"].to_numpy(), kind="stable")
    shares = [float(np.mean(d[i] < 0)) for i in np.array_split(order, 5)]
    assert _values(bars.data[0].y) == pytest.approx(shares)
    scatter = _chart(at, "ches_scatter")  # 60 pairs: drawn at once
    assert len(_values(scatter.data[0].x)) == 60
    captions = " ".join(c.value for c in at.caption)
    assert "exact-numerics scoring pass" in captions and "Numbers:" in captions


def test_training_curves_squeezing_section(monkeypatch, synthetic_ws):
    """Training curves' squeezing section: mean top-1 probability and entropy of chosen and rejected per
    step, the reference at step 0 from its own store, with human legend names."""
    from did_core.workspace import Workspace

    at = _open(_app(monkeypatch, synthetic_ws), "curves")
    fig = _chart(at, "squeezing")
    pairs = Workspace(synthetic_ws).pairs("synthetic")
    chosen = next(t for t in fig.data if t.name == "chosen y_w" and t.xaxis == "x")
    assert _values(chosen.x) == [0, 100, 200, 300]
    y = _values(chosen.y)
    assert y[0] == pytest.approx(pairs.groupby("pair_id")["ref_top1_prob_chosen"].first().mean())
    last = pairs[pairs["model"] == "checkpoint-300"]
    assert y[-1] == pytest.approx(last["top1_prob_chosen"].mean())
    entropy = next(t for t in fig.data if t.name == "rejected y_l" and t.xaxis == "x2")
    assert _values(entropy.y)[-1] == pytest.approx(last["token_entropy_rejected"].mean())
    assert {t.name for t in fig.data if t.showlegend is not False} == {
        "chosen y_w", "rejected y_l", "reference, chosen", "reference, rejected"}
    assert any("next-token entropy" in c.value and "Numbers:" in c.value for c in at.caption)


def test_ches_and_squeezing_sections_say_when_a_run_was_scored_before_them(monkeypatch, tmp_path):
    """An old store (no CHES or squeezing columns): each section says why it is empty, nothing is drawn."""
    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(tmp_path, n_pairs=20, n_checkpoints=2, stored_extras=False)
    at = _open(_app(monkeypatch, str(tmp_path)), "margins")
    assert any("No CHES for this run" in i.value and "score the run again" in i.value for i in at.info)
    assert not [c for c in at.get("plotly_chart") if "ches" in c.proto.id]
    _open(at, "curves")
    assert any("No squeezing columns" in i.value for i in at.info)
    assert not [c for c in at.get("plotly_chart") if "squeezing" in c.proto.id]


def test_example_shows_per_token_squeezing_beside_the_reference(monkeypatch, synthetic_ws):
    """Example's per-token squeezing: the chart's checkpoint and reference lines are the stored
    top1_prob / token_entropy of each position (ws.tokens), the top-1 colouring has its own legend
    and caption and puts the stored values in each token's hover; captions name the numerics."""
    import numpy as np

    from did_core.workspace import Workspace

    at = _app(monkeypatch, synthetic_ws)
    at.query_params.update({"run": "synthetic", "example": "3", "ckpt": "checkpoint-200"})
    _open(at, "example")
    stored = Workspace(synthetic_ws).tokens("synthetic", "checkpoint-200", ["3"])
    fig = _chart(at, "example_squeezing")
    for side, label in (("chosen", "chosen y_w"), ("rejected", "rejected y_l")):
        s = stored[stored["side"] == side].sort_values("position")
        for axis, metric in (("x", "top1_prob"), ("x2", "token_entropy")):
            pol = next(t for t in fig.data if t.name == f"checkpoint-200, {label}" and t.xaxis == axis)
            ref = next(t for t in fig.data if t.name == f"reference, {label}" and t.xaxis == axis)
            assert _values(pol.x) == s["position"].tolist()
            np.testing.assert_allclose(_values(pol.y), s[metric].to_numpy(float), rtol=0, atol=1e-7)
            np.testing.assert_allclose(_values(ref.y), s[f"ref_{metric}"].to_numpy(float), rtol=0, atol=1e-7)
    assert not np.allclose(stored["top1_prob"], stored["ref_top1_prob"])  # two models, two lines
    assert any("max_v π(v | x, y_<t)" in c.value and "Numbers:" in c.value for c in at.caption)

    at.segmented_control(key="example_colour").set_value("top1_prob").run()
    assert not at.exception and not at.info
    caption = next(c.value for c in at.caption if "share one scale" in c.value)
    assert "Green" in caption and "Blue" not in caption and "fixed from 0 to 1" in caption
    bodies = [h.proto.body for h in at.get("html")]
    legend = next(b for b in bodies if "padding:1px 6px" in b)
    assert "top-1 probability" in legend and "1.00" in legend
    tokens = " ".join(b for b in bodies if "<span title=" in b)
    first = stored.sort_values(["side", "position"]).iloc[0]
    assert f"top1_prob {first['top1_prob']:.4f} | ref_top1_prob {first['ref_top1_prob']:.4f}" in tokens


def test_example_says_when_per_token_squeezing_was_not_stored(monkeypatch, tmp_path):
    """A run scored before per-token squeezing: the section and the colouring say why, no chart is drawn."""
    from did_core.synthetic_ws import make_synthetic_workspace

    make_synthetic_workspace(tmp_path, n_pairs=10, n_checkpoints=1, stored_extras=False)
    at = _app(monkeypatch, str(tmp_path))
    at.query_params.update({"run": "synthetic", "example": "3", "ckpt": "checkpoint-100"})
    _open(at, "example")
    assert any("No per-token squeezing under checkpoint-100" in i.value and "score the run again" in i.value
               for i in at.info)
    assert not [c for c in at.get("plotly_chart") if "example_squeezing" in c.proto.id]
    at.segmented_control(key="example_colour").set_value("token_entropy").run()
    assert any("No next-token entropy to colour by" in i.value for i in at.info)
