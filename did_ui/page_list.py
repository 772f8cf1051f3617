"""The dashboard's pages, defined once: file, url path, menu title, heading and icon, for app.py's
router, the menu, each page's title, the tests and the benchmarks. No streamlit here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageInfo:
    path: str
    """The page's file, relative to app.py."""
    title: str
    """Its name in the menu."""
    heading: str
    """The title the page draws."""
    icon: str
    section: str
    """The menu section it is listed under."""


PAGES: dict[str, PageInfo] = {  # menu order; the key is the url path
    "runs": PageInfo("pages/runs.py", "Runs", "Runs", ":material/table_view:", "Explore"),
    "curves": PageInfo("pages/curves.py", "Training curves", "Training curves", ":material/show_chart:", "Explore"),
    "margins": PageInfo("pages/margins.py", "Log-margins", "Log-margins", ":material/scatter_plot:", "Explore"),
    "entropy": PageInfo("pages/entropy.py", "DID entropy", "DID entropy", ":material/bar_chart:", "Explore"),
    "compare": PageInfo("pages/compare.py", "Compare", "Compare checkpoints", ":material/compare_arrows:", "Explore"),
    "example": PageInfo("pages/example.py", "Example", "Example", ":material/article:", "Explore"),
    "score": PageInfo("pages/score.py", "Score", "Score", ":material/play_arrow:", "Tools"),
    "lab": PageInfo("pages/lab.py", "Synthetic lab", "Synthetic lab", ":material/science:", "Tools"),
}
HEADINGS = {key: p.heading for key, p in PAGES.items()}
"""url path -> the heading its page draws (what a browser test waits for)."""
