"""Token colouring for the Example page: a token's background by its value (log-ratio, DID entropy,
log-prob, or the checkpoint's own next-token top-1 probability and entropy), readable text on every
background (WCAG contrast), the legend and the tokens as HTML.

Dataset text is never interpreted: token pieces go through `html.escape` before any HTML is built.
No streamlit here: the page draws what these functions return.
"""

from __future__ import annotations

import html
import math

import pandas as pd

COLOUR_BY = {"log_ratio": "log-ratio log π/π_ref", "did_entropy": "DID entropy H_t", "logp": "log-prob log π",
             "top1_prob": "top-1 probability", "token_entropy": "next-token entropy"}
SQUEEZING_COLOURS = ("top1_prob", "token_entropy")
"""Colourings by the checkpoint's own next-token distribution (squeezing; exact numerics only)."""

COLOUR_CAPTION = {
    "log_ratio": "Blue: the checkpoint raised the token's log-prob over the reference (log π − log π_ref > 0); "
                 "red: lowered; white: unchanged.",
    "did_entropy": "Purple: the DID at this position, q_t = softmax(log π − log π_ref) over the vocabulary, is "
                   "spread out (high H_t); white: peaked on a few tokens (H_t near 0).",
    "logp": "Orange: the checkpoint finds the token unlikely (log π far below 0); white: near-certain (log π near 0).",
    "top1_prob": "Green: at this position the checkpoint puts most of its next-token probability on one token "
                 "(max_v π(v | x, y_<t) near 1: a squeezed, peaked distribution); white: no token stands out "
                 "(near 0). The scale is fixed from 0 to 1.",
    "token_entropy": "Teal: the checkpoint's next-token distribution at this position is spread out (high "
                     "entropy −Σ_v π(v|·) log π(v|·), in nats); white: peaked on one token (entropy near 0).",
}
"""What each colouring means, said under the tokens (the page shows the one that matches the colours)."""

PAGE_BACKGROUND = (255, 255, 255)
"""Streamlit's light-theme background (#ffffff; .streamlit/config.toml sets base = "light"). Token
colours are this blended with a full-strength colour and sent opaque, and each token gets black or
white text, whichever contrasts more with its own background: readable whatever the page behind it
(a user can still switch Streamlit to its dark theme, #0e1117, from the settings menu)."""

_FULL_COLOUR = {  # the colour at |value| = scale; the scale runs from the page background to it
    ("log_ratio", 1): (33, 102, 172),    # raised: blue
    ("log_ratio", -1): (178, 24, 43),    # lowered: red
    ("did_entropy", 1): (118, 42, 131),  # purple
    ("logp", 1): (230, 85, 13),          # orange: logp ≤ 0, darker = less likely
    ("top1_prob", 1): (35, 139, 69),     # green: a probability in [0, 1], darker = more peaked
    ("token_entropy", 1): (1, 133, 113),  # teal: entropy ≥ 0 (nats), darker = more spread out
}


def _relative_luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour (0–255 channels)."""
    def linear(c: int) -> float:
        c8 = c / 255
        return c8 / 12.92 if c8 <= 0.04045 else ((c8 + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG 2.x contrast ratio (L_light + 0.05) / (L_dark + 0.05), in [1, 21]."""
    la, lb = sorted((_relative_luminance(a), _relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def token_colour(value: float, scale: float, kind: str) -> tuple[int, int, int] | None:
    """The opaque background of a token whose `kind` value is `value` (None: no value, no colour).

    |value|/scale (clipped to 1) blends PAGE_BACKGROUND towards the mode's full colour; log-ratios
    are blue above 0 and red below.
    """
    if not math.isfinite(value) or scale <= 0:
        return None
    t = max(-1.0, min(1.0, value / scale))
    full = _FULL_COLOUR[(kind, -1 if t < 0 else 1)] if kind == "log_ratio" else _FULL_COLOUR[(kind, 1)]
    w = abs(t)
    return tuple(round(bg + w * (c - bg)) for bg, c in zip(PAGE_BACKGROUND, full, strict=True))  # type: ignore[return-value]


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with `background`: one of them always reaches
    √21 ≈ 4.58:1, above WCAG AA's 4.5:1 for normal text."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast_ratio(background, black) >= contrast_ratio(background, white) else white


def _rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def _rgba(value: float, scale: float, kind: str) -> str:
    """The CSS `background:…;color:…` of one token (no value: transparent, the theme's own text colour)."""
    bg = token_colour(value, scale, kind)
    if bg is None:
        return "background:transparent"
    return f"background:{_rgb(bg)};color:{_rgb(text_colour(bg))}"


def colour_scale(tokens: pd.DataFrame, colour_by: str) -> float:
    """The largest |value| of `colour_by` over `tokens` (0 when none is finite): pass the same one to
    every `tokens_html` call of a view, so one colour means one value in chosen and rejected alike."""
    if tokens.empty or colour_by not in tokens:
        return 0.0
    vals = tokens[colour_by].to_numpy(dtype=float)
    finite = vals[[math.isfinite(x) for x in vals]]
    if colour_by == "top1_prob":  # a probability: one fixed scale, so checkpoints and pairs compare
        return 1.0 if finite.size else 0.0
    return float(max(abs(finite.min()), abs(finite.max()))) if finite.size else 0.0


def colour_legend_html(colour_by: str, scale: float, steps: int = 9) -> str:
    """A row of `steps` swatches from one end of the scale to the other, each labelled with its value
    (in its own readable text colour), between the ends' meanings."""
    if scale <= 0:
        return "<div style='color:grey'>(no values to colour by)</div>"
    lo, hi, left, right = {
        "log_ratio": (-scale, scale, "lowered", "raised"),
        "did_entropy": (0.0, scale, "peaked DID", "spread-out DID"),
        "logp": (0.0, -scale, "likely", "unlikely"),
        "top1_prob": (0.0, scale, "spread out", "peaked (squeezed)"),
        "token_entropy": (0.0, scale, "peaked", "spread out"),
    }[colour_by]
    cells = []
    for k in range(steps):
        value = lo + (hi - lo) * k / (steps - 1)
        number = f"{value:+.2f}" if colour_by == "log_ratio" else f"{value + 0.0:.2f}"  # + 0.0: no "-0.00"
        cells.append(f"<span style=\"{_rgba(value, scale, colour_by)};padding:1px 6px;border-radius:3px\">"
                     f"{number}</span>")
    label = html.escape(COLOUR_BY[colour_by])
    return (f"<div style='font-family:monospace;font-size:0.85em;line-height:2'>{label}: {left} "
            + "".join(cells) + f" {right}</div>")


def tokens_html(tokens: pd.DataFrame, colour_by: str, scale: float | None = None) -> str:
    """Tokens as coloured spans with exact values in the hover title. Every piece of dataset text
    is escaped; only numbers and our own markup are unescaped. `scale` (default: these tokens'
    largest |value|, `colour_scale`) is the value drawn at full colour."""
    if tokens.empty or colour_by not in tokens:
        return "<div style='color:grey'>(no tokens stored)</div>"
    vals = tokens[colour_by].to_numpy(dtype=float)
    scale = colour_scale(tokens, colour_by) if scale is None else scale
    spans = []
    for row, value in zip(tokens.itertuples(index=False), vals, strict=True):
        piece = html.escape(str(row.token), quote=True).replace("\n", "↵<br>") or "∅"
        tip = " | ".join(f"{k} {getattr(row, k):.4f}" for k in ("logp", "ref_logp", "log_ratio", "did_entropy",
                                                                 "top1_prob", "ref_top1_prob", "token_entropy",
                                                                 "ref_token_entropy")
                         if hasattr(row, k) and isinstance(getattr(row, k), float) and math.isfinite(getattr(row, k)))
        tip = html.escape(f"#{row.position} id {row.token_id} {str(row.token)!r} | {tip}", quote=True)
        spans.append(f"<span title=\"{tip}\" style=\"{_rgba(value, scale, colour_by)};"
                     f"border-radius:3px;padding:1px 1px;white-space:pre-wrap\">{piece}</span>")
    return "<div style='font-family:monospace;line-height:1.9'>" + "".join(spans) + "</div>"
