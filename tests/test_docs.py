"""The repository documents itself: nothing points outside it, and docs/REFERENCE.md states the
command line and the export columns as the code has them now."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "REFERENCE.md"
OUTSIDE = (b"DESIGN" + b".md", b"../" + b"shared")
"""A design file and a folder that users of this repository do not have."""


def _repository_files() -> list[Path]:
    """Tracked files and untracked ones git does not ignore (what a commit of the tree would hold)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def _section(number: int) -> str:
    """The text of REFERENCE.md's `## <number>.` section."""
    text = REFERENCE.read_text(encoding="utf-8")
    m = re.search(rf"^## {number}\. .*?(?=^## \d+\. |\Z)", text, flags=re.S | re.M)
    assert m, f"docs/REFERENCE.md has no section {number}"
    return m.group(0)


def test_no_file_points_outside_the_repository():
    """Code, help strings, comments, docs and the README cite docs/ files, never the team's design
    file or the folder beside the repository."""
    files = [p for p in _repository_files() if p.is_file() and p != Path(__file__).resolve()]
    assert len(files) > 50
    found = []
    for path in files:
        data = path.read_bytes()
        for needle in OUTSIDE:
            for m in re.finditer(re.escape(needle), data):
                line = data.count(b"\n", 0, m.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {needle.decode()}")
    assert not found, "\n".join(found)


def test_every_cited_reference_section_exists():
    """`REFERENCE.md §n` anywhere in the repository names a section the file has."""
    cited = set()
    for path in _repository_files():
        if path.is_file() and path.suffix in (".py", ".md"):
            cited |= {int(n) for n in re.findall(r"REFERENCE\.md\)? ?§(\d+)", path.read_text(encoding="utf-8"))}
    assert cited, "nothing cites docs/REFERENCE.md"
    for number in sorted(cited):
        _section(number)


def _subcommands() -> dict:
    from did_core.__main__ import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_reference_lists_every_command_line_option():
    """§6 names every command and every option each command's parser accepts (so --help and the
    reference cannot drift apart), and every choice of a choice option. An option --help hides
    (argparse.SUPPRESS: a test hook such as score's --chunk-delay) is not for users and is left out."""
    cli = _section(6)
    missing = []
    for name, parser in _subcommands().items():
        if f"`{name}`" not in cli:
            missing.append(name)
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and f"`{option}" not in cli:
                    missing.append(f"{name} {option}")
            for choice in action.choices or []:
                if not re.search(rf"\b{re.escape(str(choice))}\b", cli):
                    missing.append(f"{name} {action.option_strings[0]} {choice}")
    assert not missing, missing


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from did_core.synthetic_ws import make_synthetic_workspace

    root = tmp_path_factory.mktemp("docs_ws")
    make_synthetic_workspace(root, n_pairs=4, n_checkpoints=2, tokens=True)
    return root


def test_reference_lists_every_export_column(workspace):
    """§7 names every column each `--kind` writes, and the pairs columns in the order written."""
    from did_core import export

    exports = _section(7)
    tables = {"pairs": export.pairs_table(workspace, "synthetic"), "tokens": export.tokens_table(workspace, "synthetic"),
              "trl": export.trl_reference_table(workspace, "synthetic")}
    missing = [f"{kind}: {c}" for kind, df in tables.items() for c in df.columns if f"`{c}`" not in exports]
    assert not missing, missing
    pairs_part = exports[exports.index("`--kind pairs`"):exports.index("`--kind tokens`")]
    positions = [pairs_part.index(f"`{c}`") for c in tables["pairs"].columns]
    assert positions == sorted(positions), "pairs columns are listed out of order"
