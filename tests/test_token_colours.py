"""Token colouring (did_ui/token_colours.py): escaping, exact values in the tooltips, readable text
on every colour of every scale, one scale for both responses, a caption and legend per mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_tokens_are_escaped_and_carry_exact_values():
    pytest.importorskip("streamlit")
    from did_ui.token_colours import tokens_html

    toks = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": [0, 1, 2], "token_id": [5, 6, 7],
                         "token": ["<script>alert(1)</script>", '" onmouseover="x', "a\nb"],
                         "logp": np.array([-0.5, -1.25, -2.0], np.float32),
                         "ref_logp": np.array([-1.0, -1.0, -1.0], np.float32),
                         "log_ratio": np.array([0.5, -0.25, -1.0], np.float32), "did_entropy": np.float32(np.nan)})
    html = tokens_html(toks, "log_ratio")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '" onmouseover' not in html and "&quot; onmouseover" in html
    assert "log_ratio 0.5000" in html and "logp -1.2500" in html and "↵<br>" in html


STREAMLIT_BACKGROUNDS = {"light": (255, 255, 255), "dark": (14, 17, 23)}
"""Streamlit's theme backgrounds (#ffffff; dark #0e1117): the app sets base = "light", a user can pick dark."""


def _wcag_luminance(rgb) -> float:
    """WCAG 2.x relative luminance, written out here independently of did_ui.token_colours."""
    out = []
    for c in rgb:
        c = c / 255
        out.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    return 0.2126 * out[0] + 0.7152 * out[1] + 0.0722 * out[2]


def _css_colour(text: str, page) -> tuple[float, float, float]:
    """An rgb()/rgba() CSS colour as the browser paints it over `page` (alpha compositing)."""
    import re

    r, g, b, *a = (float(x) for x in re.fullmatch(r"rgba?\(([^)]*)\)", text.strip()).group(1).split(","))
    alpha = a[0] if a else 1.0
    return tuple(alpha * c + (1 - alpha) * p for c, p in zip((r, g, b), page, strict=True))


def _span_contrasts(markup: str) -> list[tuple[str, float]]:
    """(background, contrast of text on it) for every coloured span in `markup`, over both themes."""
    import re

    out = []
    for style in re.findall(r'style="([^"]*)"', markup):
        props = dict(p.split(":", 1) for p in style.split(";") if ":" in p)
        if props.get("background", "transparent") == "transparent":
            continue
        assert "color" in props, style  # a coloured token always says its text colour
        for page in STREAMLIT_BACKGROUNDS.values():
            bg = _css_colour(props["background"], page)
            fg = _css_colour(props["color"], bg)
            hi, lo = sorted((_wcag_luminance(bg), _wcag_luminance(fg)), reverse=True)
            out.append((props["background"], (hi + 0.05) / (lo + 0.05)))
    return out


@pytest.mark.parametrize("colour_by", ["log_ratio", "did_entropy", "logp", "top1_prob", "token_entropy"])
def test_every_token_colour_has_readable_text(colour_by):
    """WCAG AA (4.5:1) for the token text on every colour of the scale: 201 values from one end to the
    other (log-ratios both signs, entropies ≥ 0, log-probs ≤ 0), composited over Streamlit's light and
    dark backgrounds as a browser would; the legend's swatches too."""
    pytest.importorskip("streamlit")
    from did_ui import token_colours

    scale = 1.0 if colour_by == "top1_prob" else 3.0  # a probability's scale is fixed at 1 (colour_scale)
    values = {"log_ratio": np.linspace(-scale, scale, 201), "did_entropy": np.linspace(0, scale, 201),
              "logp": np.linspace(-scale, 0, 201), "top1_prob": np.linspace(0, scale, 201),
              "token_entropy": np.linspace(0, scale, 201)}[colour_by]
    toks = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": np.arange(201), "token_id": np.arange(201),
                         "token": "tok", "logp": -1.0, "ref_logp": -1.0, "log_ratio": 0.0, "did_entropy": 1.0})
    toks[colour_by] = values
    markup = token_colours.tokens_html(toks, colour_by, scale)
    contrasts = _span_contrasts(markup)
    assert len(contrasts) >= 2 * 200  # every value but an exact 0 gets a colour (0 may too)
    worst = min(contrasts, key=lambda bc: bc[1])
    assert worst[1] >= 4.5, worst
    assert len({b for b, _ in contrasts}) > 50  # a scale, not one colour
    legend = _span_contrasts(token_colours.colour_legend_html(colour_by, scale))
    assert len(legend) == 2 * 9 and min(c for _, c in legend) >= 4.5


def test_one_scale_for_both_responses_and_a_caption_per_mode():
    """The page passes one scale to both sides, so equal values get equal colours; each colouring
    has its own caption and legend, and only log-ratio speaks of blue and red."""
    pytest.importorskip("streamlit")
    from did_ui import token_colours

    chosen = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": [0], "token_id": [1], "token": ["a"],
                           "log_ratio": [0.5]})
    rejected = chosen.assign(side="rejected", log_ratio=[2.0])
    both = pd.concat([chosen, rejected])
    scale = token_colours.colour_scale(both, "log_ratio")
    assert scale == 2.0
    assert token_colours.tokens_html(chosen, "log_ratio", scale) != token_colours.tokens_html(chosen, "log_ratio")
    assert set(token_colours.COLOUR_CAPTION) == set(token_colours.COLOUR_BY)
    assert "Blue" in token_colours.COLOUR_CAPTION["log_ratio"]
    for mode in ("did_entropy", "logp"):
        assert "Blue" not in token_colours.COLOUR_CAPTION[mode] and "red" not in token_colours.COLOUR_CAPTION[mode]
    assert "Purple" in token_colours.COLOUR_CAPTION["did_entropy"] and "Orange" in token_colours.COLOUR_CAPTION["logp"]
    assert "no values" in token_colours.colour_legend_html("did_entropy", 0.0)


def test_squeezing_colourings_have_their_own_scale_caption_and_legend():
    """Top-1 probability is drawn on a fixed 0–1 scale (one colour, one probability in every pair and
    checkpoint); next-token entropy on the largest value shown, like DID entropy. Each has a caption
    naming its own colour (no blue or red) and a legend with its ends' meanings."""
    pytest.importorskip("streamlit")
    from did_ui import token_colours

    toks = pd.DataFrame({"pair_id": "0", "side": "chosen", "position": [0, 1], "token_id": [1, 2],
                         "token": ["a", "b"], "top1_prob": [0.2, 0.4], "token_entropy": [0.5, 2.5],
                         "ref_top1_prob": [0.3, 0.3], "ref_token_entropy": [1.0, 1.0]})
    assert token_colours.colour_scale(toks, "top1_prob") == 1.0
    assert token_colours.colour_scale(toks, "token_entropy") == 2.5
    assert token_colours.colour_scale(toks.assign(top1_prob=np.nan), "top1_prob") == 0.0
    for mode, colour in (("top1_prob", "Green"), ("token_entropy", "Teal")):
        cap = token_colours.COLOUR_CAPTION[mode]
        assert cap.startswith(colour) and "Blue" not in cap and "red" not in cap
        assert mode in token_colours.SQUEEZING_COLOURS
    assert "peaked (squeezed)" in token_colours.colour_legend_html("top1_prob", 1.0)
    assert "1.00" in token_colours.colour_legend_html("top1_prob", 1.0)
    tip = token_colours.tokens_html(toks, "top1_prob", 1.0)
    assert "top1_prob 0.2000 | ref_top1_prob 0.3000 | token_entropy 0.5000 | ref_token_entropy 1.0000" in tip
