"""Hostile content (issue 6, part 1): a corpus of inputs an attacker, a buggy exporter or plain bad
luck produces. Each one either loads and round-trips exactly (every prompt/response byte for byte
through the workspace) or ends with a one-line `InputError` naming the file — never a traceback.

The dashboard side: a run scored from HTML/script/Markdown/LaTeX texts renders on every page with
no unescaped markup in any st.html or HTML-enabled markdown element, the Example page shows the
texts with st.text, and the Score page's upload keeps a hostile file name inside the workspace and
passes its path to the job as one argv element.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest
import torch

from did_core.__main__ import main
from did_core.data import load_preference_data
from did_core.errors import InputError
from did_core.tiny import build_tokenizer, tiny_llama
from did_core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<iframe src=javascript:alert(1)></iframe>",
       "<svg onload=alert(1)>", "\" onmouseover=\"alert(1)", "</span></div><script>alert(1)</script>"]
MARKDOWN = "# Title\n**bold** _it_ [link](javascript:alert(1)) ![img](http://x/y.png) `code`\n```\nfence\n```\n| a | b |\n> quote\n- [ ] task"
LATEX = r"$x^2$ and $$\frac{a}{b}$$ \(\alpha\) \begin{align}a&=b\\c\end{align} % comment \$5 ~ ^ _"
RTL = "\u202eevil.exe\u202c \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u200f\u200e\u2067x\u2069"
ZERO_WIDTH = "a\u200bb\u200cc\u200dd\ufeffe\u2060f\u00adg"
EMOJI = "\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f1eb\U0001f1f7 \U0001f600"
CONTROL = "\x00\x01\x07\x08\x1b[31mred\x1b[0m\x7f\t\x0b\x0c"
SEPARATORS = "line\u2028separator\u2029paragraph\u0085next\r\nwindows\rold mac"
ODD_UNICODE = "e\u0301 vs \u00e9, \ufffe\uffff noncharacters, \ue000 private, \U0010ffff last, \U0001d54f math"


@dataclass
class Case:
    """One hostile input: a file, and either the rows it must load as, or an error."""

    name: str
    filename: str
    content: bytes
    rows: list[dict[str, Any]] | None = None
    """Expected (prompt, chosen, rejected) per row, exactly; None: must fail with InputError."""
    check: Callable[[pd.DataFrame], None] | None = None
    """Extra check of the loaded pairs (extra columns: NaN, inf)."""
    match: str | None = None
    """A substring the one-line error must contain (besides the file name)."""
    tags: set[str] = field(default_factory=set)


def _jsonl(records: list[dict], ensure_ascii: bool = False) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in records).encode("utf-8")


def _csv(records: list[dict]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(records[0]))
    w.writeheader()
    w.writerows(records)
    return buf.getvalue().encode("utf-8")


def _parquet(records: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buf)  # keeps NaN as NaN (pandas would write null)
    return buf.getvalue()


def _triples(*texts: tuple[str, str, str]) -> list[dict]:
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in texts]


def _ok(name: str, filename: str, records: list[dict], writer=_jsonl, check=None, **kw) -> Case:
    """A case whose prompt/chosen/rejected must come back exactly as written."""
    expected = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
    return Case(name, filename, writer(records, **kw), rows=expected, check=check)


def _bad(name: str, filename: str, content: bytes | str, match: str | None = None) -> Case:
    return Case(name, filename, content.encode("utf-8") if isinstance(content, str) else content, match=match)


def _nan_inf_check(df: pd.DataFrame) -> None:
    scores = df["score_chosen"].tolist()
    assert math.isnan(scores[0]) and scores[1] == math.inf and scores[2] == -math.inf


def _hh(chosen_answer: str, rejected_answer: str, human: str) -> dict:
    base = f"\n\nHuman: {human}\n\nAssistant:"
    return {"chosen": base + chosen_answer, "rejected": base + rejected_answer}


def corpus() -> list[Case]:
    xss = _triples(*[(x, XSS[(i + 1) % len(XSS)], XSS[(i + 2) % len(XSS)]) for i, x in enumerate(XSS)])
    conv = [{"prompt": [{"role": "system", "content": XSS[0]}, {"role": "user", "content": MARKDOWN}],
             "chosen": [{"role": "assistant", "content": XSS[1]}],
             "rejected": [{"role": "assistant", "content": LATEX}]}]
    hh = [_hh(" <b>yes</b>", " <script>alert(1)</script>", "<img src=x onerror=alert(1)> hi")]
    nan_rows = [{"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": v, "score_rejected": 1.0}
                for v in (math.nan, math.inf, -math.inf)]
    parquet_nan = [{"prompt": XSS[0], "chosen": RTL, "rejected": EMOJI, "score_chosen": v}
                   for v in (math.nan, math.inf, -math.inf)]
    cases = [
        # --- loads, and every byte comes back -------------------------------------------------------
        _ok("html and script", "xss.jsonl", xss),
        _ok("html escaped as \\u003c in JSON", "xss_ascii.jsonl", xss, ensure_ascii=True),
        _ok("markdown control characters", "markdown.jsonl", _triples((MARKDOWN, "**not bold**", "[x](y)"))),
        _ok("latex control characters", "latex.jsonl", _triples((LATEX, "$$E=mc^2$$", r"\textbf{x}"))),
        _ok("right-to-left overrides", "rtl.jsonl", _triples((RTL, RTL[::-1], "\u202d" + RTL))),
        _ok("zero-width characters", "zw.jsonl", _triples((ZERO_WIDTH, "\u200b", "\ufeff"))),
        _ok("emoji and ZWJ sequences", "emoji.jsonl", _triples((EMOJI, "\U0001f600", "\U0001f4a9"))),
        _ok("control characters and ANSI escapes", "ctrl.jsonl", _triples((CONTROL, "\x1b]0;title\x07", "\x00"))),
        _ok("U+2028/U+2029/U+0085 and CR inside strings", "seps.jsonl",
            _triples((SEPARATORS, "a\u2028b", "c\u0085d"))),
        _ok("combining marks, noncharacters, astral", "odd.jsonl", _triples((ODD_UNICODE, "e\u0301", "\u00e9"))),
        _ok("escaped surrogate pair (valid emoji)", "pair_escape.jsonl", _triples(("p", "\U0001f600", "x")),
            ensure_ascii=True),
        _ok("text that looks like a JSON message list", "lookalike.jsonl",
            _triples(('[{"role": "user", "content": "hi"}]', "[{'role': 'x'}]", "[]"))),
        _ok("NaN and infinity in numeric columns (JSONL)", "nan.jsonl", nan_rows, check=_nan_inf_check),
        _ok("NaN and infinity in numeric columns (Parquet)", "nan.parquet", parquet_nan, writer=_parquet,
            check=_nan_inf_check),
        _ok("html in JSON (a list of records)", "xss.json", xss,
            writer=lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8")),
        _ok("html, quotes and newlines in CSV cells", "xss.csv",
            _triples((XSS[0] + '\n"quoted"', XSS[4], "a,b\r\nc")), writer=_csv),
        _ok("hostile column names", "cols.jsonl",
            [{"prompt": "p", "chosen": "c", "rejected": "r", "<script>alert(1)</script>": 1, "../x": "y"}]),
        _ok("hostile ids", "ids.jsonl",
            [{"id": i, "prompt": XSS[0], "chosen": "c", "rejected": "r"}
             for i in ("<img src=x onerror=alert(1)>", "../../etc/passwd", "`code` **b**", "$x$")]),
        Case("html in conversational messages", "conv.jsonl", _jsonl(conv),
             rows=[{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in conv]),
        Case("html in HH-RLHF transcripts (implicit prompt)", "hh.jsonl", _jsonl(hh),
             rows=[{"prompt": hh[0]["chosen"][:-len(" <b>yes</b>")], "chosen": " <b>yes</b>",
                    "rejected": " <script>alert(1)</script>"}]),
        Case("BOM at the start of the file", "bom.jsonl", b"\xef\xbb\xbf" + _jsonl(xss[:1]),
             rows=[{k: xss[0][k] for k in ("prompt", "chosen", "rejected")}]),
        # --- refused with one line ------------------------------------------------------------------
        _bad("binary file with a .jsonl name", "binary.jsonl", bytes(range(256)) * 64, "binary"),
        _bad("binary without NUL bytes (.jsonl)", "highbytes.jsonl", bytes(range(128, 256)) * 64, "UTF-8"),
        _bad("PNG with a .jsonl name", "image.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64, "binary"),
        _bad("gzip bytes without .gz", "zipped.jsonl", gzip.compress(_jsonl(xss)), None),
        _bad("UTF-16 text", "utf16.jsonl", json.dumps(xss[0]).encode("utf-16"), "binary"),
        _bad("duplicate ids", "dup.jsonl", _jsonl([{"id": "a", **xss[0]}, {"id": "a", **xss[1]}]), "duplicate id"),
        _bad("duplicate ids 1 and 1.0", "dup_num.jsonl", _jsonl([{"id": 1, **xss[0]}, {"id": 1.0, **xss[1]}]),
             "duplicate id"),
        _bad("NaN id", "nan_id.jsonl", b'{"id": NaN, "prompt": "p", "chosen": "c", "rejected": "r"}\n', "missing id"),
        _bad("implicit prompt, transcripts share no prefix", "noprefix.jsonl",
             _jsonl([{"chosen": "<b>hello</b>", "rejected": "world"}]), "share no leading text"),
        _bad("HH-RLHF transcripts that share no prefix", "hh_noprefix.jsonl",
             _jsonl([{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: b"}]),
             "share no prefix"),
        _bad("conversational, implicit prompt, no shared turn", "conv_noprefix.jsonl",
             _jsonl([{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                      "rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "b"}]}]),
             "implicit prompt"),
        _bad("NaN as a response", "nan_resp.jsonl", b'{"prompt": "p", "chosen": NaN, "rejected": "r"}\n', "NaN"),
        _bad("infinity as a prompt", "inf_prompt.jsonl", b'{"prompt": Infinity, "chosen": "c", "rejected": "r"}\n',
             "prompt"),
        _bad("lone surrogate escape", "surrogate.jsonl", b'{"prompt": "a\\ud800", "chosen": "c", "rejected": "r"}\n',
             "surrogate"),
        _bad("lone surrogate in an extra column (JSON)", "surrogate.json",
             b'[{"prompt": "a", "chosen": "c", "rejected": "r", "x": "\\udfff"}]', "surrogate"),
        _bad("JSON nested 100,000 deep", "deep.jsonl",
             b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "chosen": "c", "rejected": "r"}\n', "JSON"),
        _bad("an integer of 5,000 digits", "bigint.jsonl",
             b'{"id": ' + b"9" * 5000 + b', "prompt": "p", "chosen": "c", "rejected": "r"}\n', "JSON"),
        _bad("script tag as a role", "role.jsonl",
             _jsonl([{"prompt": [{"role": "<script>", "content": "x"}], "chosen": [{"role": "assistant", "content": "c"}],
                      "rejected": [{"role": "assistant", "content": "r"}]}]), "role"),
        _bad("a bare JSON string", "string.json", json.dumps(XSS[0]), "expected a JSON list"),
        _bad("CSV with a NUL byte", "nul.csv", b"prompt,chosen,rejected\na,b\x00,c\n", "binary"),
        _bad("truncated Parquet", "trunc.parquet", _parquet(xss)[:300], "Parquet"),
    ]
    return cases


CORPUS = corpus()


def test_corpus_size():
    assert len(CORPUS) >= 30
    assert sum(c.rows is not None for c in CORPUS) >= 15 and sum(c.rows is None for c in CORPUS) >= 15


def _write(case: Case, d: Path) -> Path:
    path = d / case.filename
    path.write_bytes(case.content)
    return path


def _stored_texts(ws: Workspace, fp: str, conversational: bool) -> pd.DataFrame:
    df, info = ws.dataset_table(fp)
    assert info["conversational"] == conversational
    if conversational:
        for col in ("prompt", "chosen", "rejected"):
            df[col] = [json.loads(v) for v in df[col]]
    return df


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_loader_round_trip_or_one_line_error(case: Case, tmp_path):
    path = _write(case, tmp_path)
    if case.rows is None:
        with pytest.raises(InputError) as exc:
            load_preference_data(str(path))
        msg = str(exc.value)
        assert "\n" not in msg and path.name in msg, msg
        if case.match:
            assert case.match.lower() in msg.lower(), msg
        return
    data = load_preference_data(str(path))
    got = data.pairs[["prompt", "chosen", "rejected"]].to_dict("records")
    assert got == case.rows
    if case.check:
        case.check(data.pairs)
    # Through the workspace: stored, read back, byte for byte.
    ws = Workspace(tmp_path / "ws")
    fp = ws.write_dataset(data)
    stored = _stored_texts(ws, fp, data.conversational)
    for col in ("prompt", "chosen", "rejected"):
        for want, have in zip(data.pairs[col], stored[col], strict=True):
            if isinstance(want, str):
                assert have.encode("utf-8") == want.encode("utf-8")
            else:
                assert have == want
    assert stored["pair_id"].tolist() == data.pairs["pair_id"].tolist()
    if case.check:
        case.check(stored)
    assert load_preference_data(str(path)).fingerprint == data.fingerprint  # deterministic


# --- through the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A reference and a TRL-style run of two checkpoints over the full printable ASCII alphabet, so
    `<`, `>`, `"` and `=` are tokens of their own (the dashboard must escape each piece)."""
    root = tmp_path_factory.mktemp("hostile-world")
    tok = build_tokenizer(merges=[("<", "s"), ("<s", "c"), ("o", "n")])
    ref = tiny_llama(len(tok), seed=0)
    ref.save_pretrained(root / "reference")
    tok.save_pretrained(root / "reference")
    for k, step in enumerate((1, 2)):
        pol = tiny_llama(len(tok), seed=0)
        g = torch.Generator().manual_seed(10 + k)
        with torch.no_grad():
            for p in pol.parameters():
                p.add_(0.05 * (k + 1) * torch.randn(p.shape, generator=g))
        d = root / "run" / f"checkpoint-{step}"
        pol.save_pretrained(d)
        tok.save_pretrained(d)
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return {"root": root, "ref": root / "reference", "run": root / "run"}


def _score(world: dict, data: Path, ws: Path, name: str, *extra: str) -> int:
    return main(["score", "--data", str(data), "--ref", str(world["ref"]), "--run", str(world["run"]),
                 "--workspace", str(ws), "--name", name, "--no-token-level", *extra])


def test_cli_scores_every_loadable_case_and_refuses_the_rest(world, tmp_path, capsys):
    ws = tmp_path / "ws"
    ok = 0
    for i, case in enumerate(CORPUS):
        path = _write(case, tmp_path)
        before = sorted(p.relative_to(ws) for p in ws.rglob("*")) if ws.exists() else []
        code = _score(world, path, ws, f"case-{i}", "--max-length", "96")
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and not x.startswith("note:")]
        if case.rows is None:
            assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (case.name, err)
            assert "Traceback" not in err[0]
            assert (sorted(p.relative_to(ws) for p in ws.rglob("*")) if ws.exists() else []) == before, case.name
            continue
        assert code == 0, (case.name, err)
        records = Workspace(ws).dataset_records(f"case-{i}")
        for col in ("prompt", "chosen", "rejected"):
            assert records[col].tolist() == [r[col] for r in case.rows], (case.name, col)
        pairs = Workspace(ws).pairs(f"case-{i}")
        assert len(pairs) == 2 * len(case.rows) and pairs["logp_chosen"].notna().all(), case.name
        ok += 1
    assert ok == sum(c.rows is not None for c in CORPUS)


def _word_level_model(root: Path, word: str) -> Path:
    """A model whose tokenizer knows `word` as one token (WordLevel, whitespace split): a 10 MB response
    then costs 10,000 tokens, so the test times the pipeline, not a character tokenizer (~2.5 µs/token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, word: 3, "question": 4, "no": 5}
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.decoder = decoders.WordPiece()
    t.add_special_tokens(["<pad>", "<eos>", "<unk>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    d = root / "wordlevel"
    tiny_llama(len(vocab), seed=1).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_ten_megabyte_response_is_truncated_with_a_notice(tmp_path, capsys):
    word = "<script>alert(1)</script>" * 40  # 1,000 characters
    big = ((word + " ") * 10_000)[:10_000_000]
    assert len(big.encode("utf-8")) == 10_000_000
    model = _word_level_model(tmp_path, word)
    data = tmp_path / "big.jsonl"
    data.write_text(json.dumps({"prompt": "question ", "chosen": big, "rejected": "no"}) + "\n" +
                    json.dumps({"prompt": "question ", "chosen": "no", "rejected": "no " + word}) + "\n")
    ws = tmp_path / "ws"
    code = main(["score", "--data", str(data), "--ref", str(model), "--policy", str(model), "--workspace", str(ws),
                 "--name", "big", "--max-length", "64", "--no-token-level"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    notes = [x for x in captured.err.splitlines() if x.startswith("note:")]
    assert len(notes) == 1 and "'truncated_responses': 1" in notes[0], captured.err
    w = Workspace(ws)
    manifest = w.run("big")
    trunc = manifest.extra["truncation"]
    assert trunc["truncated_pairs"] == 1 and trunc["dropped_tokens"] > 9_900  # ~10,000 words + EOS, 63 kept
    pairs = w.pairs("big")
    assert pairs.loc[pairs["pair_id"] == "0", "n_tokens_chosen"].item() == 63
    assert w.dataset_records("big")["chosen"][0] == big  # stored whole, byte for byte


def test_prompt_that_merges_into_the_response_is_one_line_error(tmp_path, capsys):
    """A prompt whose only token merges with the response's first (no separator, word-level or BPE
    tokenizer) leaves nothing to predict the response from: an error, not the engine's traceback."""
    model = _word_level_model(tmp_path, "answer")
    data = tmp_path / "merge.jsonl"
    data.write_text(json.dumps({"prompt": "question", "chosen": "answer", "rejected": "no"}) + "\n")
    ws = tmp_path / "ws"
    code = main(["score", "--data", str(data), "--ref", str(model), "--policy", str(model), "--workspace", str(ws)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: pair_id 0:"), err
    assert not ws.exists()


# --- the dashboard ----------------------------------------------------------------------------------

PAGES = ["runs", "curves", "margins", "entropy", "compare", "example", "score", "lab"]
RAW_MARKUP = re.compile(r"<\s*(script|img|iframe|svg|a\s|object|embed)|\son\w+\s*=\s*[\"']?alert", re.I)


@pytest.fixture(scope="module")
def hostile_ws(world, tmp_path_factory) -> dict:
    """A workspace scored (token-level on) from HTML, script, Markdown and LaTeX texts with hostile ids."""
    root = tmp_path_factory.mktemp("hostile-ws")
    texts = [*XSS, MARKDOWN, LATEX]
    records = [{"id": f"{i} <img src=x onerror=alert(1)>" if i % 3 == 0 else str(i), "prompt": f"Q{i} " + texts[i],
                "chosen": texts[(i + 1) % len(texts)], "rejected": texts[(i + 2) % len(texts)]}
               for i in range(len(texts))]
    data = root / "hostile.jsonl"
    data.write_bytes(_jsonl(records))
    ws = root / "ws"
    assert main(["score", "--data", str(data), "--ref", str(world["ref"]), "--run", str(world["run"]),
                 "--workspace", str(ws), "--name", "hostile"]) == 0
    return {"ws": str(ws), "records": records}


def _app(monkeypatch, workspace: str):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DID_WORKSPACE", workspace)
    monkeypatch.setenv("DID_AUTO_DEMO", "0")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    return at


class _Markup(HTMLParser):
    """Every tag and attribute in an HTML body; dataset text must only ever be character data."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


OUR_TAGS, OUR_ATTRS = {"span", "div", "br", "b", "code", "pre", "p"}, {"title", "style", "class"}


def _assert_only_our_markup(body: str, where: str) -> None:
    parser = _Markup()
    parser.feed(body)
    parser.close()
    assert parser.tags <= OUR_TAGS and parser.attrs <= OUR_ATTRS, (where, parser.tags, parser.attrs, body[:300])
    assert not RAW_MARKUP.search(body), (where, body[:300])


def _unsafe_bodies(at) -> list[str]:
    """Everything the browser would parse as HTML: st.html bodies and markdown with unsafe_allow_html."""
    bodies = [h.proto.body for h in at.get("html")]
    for kind in ("markdown", "caption"):
        bodies += [m.value for m in at.get(kind) if getattr(m.proto, "allow_html", False)]
    return bodies


def test_every_page_renders_hostile_texts_as_text(monkeypatch, hostile_ws):
    at = _app(monkeypatch, hostile_ws["ws"])
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        for body in _unsafe_bodies(at):
            _assert_only_our_markup(body, page)


def test_example_page_shows_each_hostile_text_verbatim(monkeypatch, hostile_ws):
    at = _app(monkeypatch, hostile_ws["ws"])
    for rec in hostile_ws["records"]:
        at.query_params.update({"run": "hostile", "example": rec["id"], "ckpt": "checkpoint-2"})
        at.switch_page("pages/example.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.text_input[0].value == rec["id"]
        shown = [t.value for t in at.get("text")]
        for key in ("prompt", "chosen", "rejected"):
            assert rec[key] in shown, (rec["id"], key)  # st.text: shown as text, never parsed
        html = " ".join(_unsafe_bodies(at))
        assert "<span title=" in html, html[:500]
        _assert_only_our_markup(html, rec["id"])
        if "<" in rec["chosen"] + rec["rejected"]:
            assert "&lt;" in html  # the pieces are there, escaped
        for md in [*at.markdown, *at.caption]:  # Markdown never carries raw dataset markup
            assert not RAW_MARKUP.search(md.value) or not getattr(md.proto, "allow_html", False)


def test_score_page_upload_with_a_hostile_name_stays_inside_the_workspace(monkeypatch, tmp_path):
    pytest.importorskip("streamlit")
    from did_ui import jobs

    started: list[list[str]] = []
    monkeypatch.setattr(jobs, "start", lambda root, argv, kind="score", cwd=None: started.append(argv) or "job-1")
    ws = tmp_path / "ws"
    at = _app(monkeypatch, str(ws))
    at.switch_page("pages/score.py").run()
    content = _jsonl(_triples((XSS[0], XSS[1], XSS[2])))
    name = "../../$(touch pwned); rm -rf ~ `id` <script>.jsonl"
    at.file_uploader[0].set_value((name, content, "application/json"))
    # models at hostile paths (the form checks that they exist before a job starts): passed as text,
    # never to a shell
    from cli_world import build_world

    world = build_world(tmp_path / "world", n_pairs=2)
    hostile_ref, hostile_ckpt = tmp_path / "ref; rm -rf ~", tmp_path / "ckpt $(id)"
    hostile_ref.symlink_to(world["ref"], target_is_directory=True)
    hostile_ckpt.symlink_to(world["run"] / "checkpoint-2", target_is_directory=True)
    at.text_input[1].set_value(str(hostile_ref))
    at.text_area[0].set_value(str(hostile_ckpt))
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(started) == 1, [e.value for e in at.error]
    argv = started[0]
    data = Path(argv[argv.index("--data") + 1])
    assert data.resolve().parent == (ws / "uploads").resolve() and data.read_bytes() == content
    assert not re.search(r"[$`;<>/ ]", data.name), data.name
    assert argv[argv.index("--ref") + 1] == str(hostile_ref) and argv[argv.index("--policy") + 1] == str(hostile_ckpt)
    assert not (tmp_path / "pwned").exists() and not (ROOT / "pwned").exists()


def test_score_page_refuses_an_upload_over_the_limit(monkeypatch, tmp_path):
    pytest.importorskip("streamlit")
    from did_ui import jobs

    started: list[list[str]] = []
    monkeypatch.setattr(jobs, "start", lambda root, argv, kind="score", cwd=None: started.append(argv) or "job-1")
    monkeypatch.setenv("DID_MAX_UPLOAD_MB", "1")
    ws = tmp_path / "ws"
    at = _app(monkeypatch, str(ws))
    at.switch_page("pages/score.py").run()
    at.file_uploader[0].set_value(("big.jsonl", b"x" * (1024 * 1024 + 1), "application/json"))
    at.text_input[1].set_value("ref")
    at.text_area[0].set_value("ckpt")
    at.button[0].click().run()
    assert not at.exception
    assert not started and any("limit" in e.value.lower() for e in at.error), [e.value for e in at.error]
    assert not (ws / "uploads").exists() or not any((ws / "uploads").iterdir())


# --- a real browser: no dialog, no injected element ----------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_browser_runs_no_script_from_the_data(hostile_ws):
    chromium = os.environ.get("DID_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"chromium not found at {chromium}")
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright
    from streamlit_server import serve

    with serve(hostile_ws["ws"]) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        links = [f"{url}/{p}" for p in PAGES]
        links += [f"{url}/example?run=hostile&ckpt=checkpoint-2&example={quote(r['id'])}"
                  for r in hostile_ws["records"][:3]]
        for link in links:
            page.goto(link)
            page.wait_for_selector("h1", timeout=30_000)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                   timeout=30_000)
            page.wait_for_timeout(300)
            injected = page.evaluate("() => document.querySelectorAll('img[src=\"x\"], iframe[src^=\"javascript\"],"
                                     " svg[onload]').length")
            assert injected == 0, link
            assert page.locator('[data-testid="stException"]').count() == 0, link
        assert dialogs == []
        page.evaluate("() => setTimeout(() => alert('control'), 0)")  # the detector itself works
        page.wait_for_timeout(200)
        assert dialogs == ["control"]
        browser.close()
