"""Loading every §4 format from every file type, pair ids, fingerprints, and the bad-input corpus."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from did_core.data import display_text, load_preference_data
from did_core.errors import InputError

HH_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"

SYS = {"role": "system", "content": "Be brief."}
U1 = {"role": "user", "content": "What color is the sky?"}
A_BLUE = {"role": "assistant", "content": "It is blue."}
A_GREEN = {"role": "assistant", "content": "It is green."}
U2 = {"role": "user", "content": "Where is the sun?"}
A_SKY = {"role": "assistant", "content": "In the sky."}
A_SEA = {"role": "assistant", "content": "In the sea."}

# Each format: raw records, then the expected (prompt, chosen, rejected) of every row.
FORMATS: dict[str, tuple[list[dict], list[tuple]]] = {
    "standard_explicit": (
        [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
         {"prompt": "The sun is", "chosen": " hot.", "rejected": " cold."}],
        [("The sky is", " blue.", " green."), ("The sun is", " hot.", " cold.")],
    ),
    "standard_implicit": (
        [{"chosen": "The sky is blue.", "rejected": "The sky is green."},
         {"chosen": "Grass: green", "rejected": "Grass: red"}],
        [("The sky is", " blue.", " green."), ("Grass:", " green", " red")],
    ),
    "conversational_explicit": (
        [{"prompt": [SYS, U1], "chosen": [A_BLUE], "rejected": [A_GREEN]},
         {"prompt": [U2], "chosen": [A_SKY], "rejected": [A_SEA]}],
        [([SYS, U1], [A_BLUE], [A_GREEN]), ([U2], [A_SKY], [A_SEA])],
    ),
    "conversational_implicit": (
        [{"chosen": [SYS, U1, A_BLUE], "rejected": [SYS, U1, A_GREEN]},
         {"chosen": [U1, A_BLUE, U2, A_SKY], "rejected": [U1, A_BLUE, U2, A_SEA]}],
        [([SYS, U1], [A_BLUE], [A_GREEN]), ([U1, A_BLUE, U2], [A_SKY], [A_SEA])],
    ),
    "hh_rlhf": (
        [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky?\n\nAssistant: It is blue.",
          "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky?\n\nAssistant: It is green."},
         {"chosen": "\n\nHuman: Sun?\n\nAssistant: Hot.", "rejected": "\n\nHuman: Sun?\n\nAssistant: No."}],
        [("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky?\n\nAssistant:", " It is blue.", " It is green."),
         ("\n\nHuman: Sun?\n\nAssistant:", " Hot.", " No.")],
    ),
    "ultrafeedback": (
        [{"prompt": U1["content"], "chosen": [U1, A_BLUE], "rejected": [U1, A_GREEN], "score_chosen": 8.0,
          "score_rejected": 3.5},
         {"prompt": U2["content"], "chosen": [U2, A_SKY], "rejected": [U2, A_SEA], "score_chosen": 9.0,
          "score_rejected": 1.0}],
        [([U1], [A_BLUE], [A_GREEN]), ([U2], [A_SKY], [A_SEA])],
    ),
    "rewardbench": (
        [{"prompt": "2+2?", "chosen": "4", "rejected": "5", "subset": "math-prm", "id": 30},
         {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome", "subset": "trivia", "id": 7}],
        [("2+2?", "4", "5"), ("Capital of France?", "Paris", "Rome")],
    ),
}
CONVERSATIONAL = {"conversational_explicit", "conversational_implicit", "ultrafeedback"}


def write(records: list[dict], path: Path) -> Path:
    """Write `records` in the file type named by `path`'s suffix (or a save_to_disk folder)."""
    name = path.name
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        text = "".join(json.dumps(r) + "\n" for r in records)
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    elif name.endswith(".json"):
        path.write_text(json.dumps(records))
    elif name.endswith(".csv"):
        import csv

        columns = list(dict.fromkeys(k for r in records for k in r))
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for r in records:
                w.writerow([json.dumps(r[c]) if isinstance(r.get(c), list) else r.get(c, "") for c in columns])
    elif name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        from datasets import Dataset

        Dataset.from_list(records).save_to_disk(str(path))
    return path


FILE_TYPES = ["data.jsonl", "data.json", "data.csv", "data.parquet", "data.jsonl.gz", "saved"]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_from_every_file_type(fmt: str, tmp_path: Path) -> None:
    records, expected = FORMATS[fmt]
    fingerprints = set()
    for file_type in FILE_TYPES:
        data = load_preference_data(str(write(records, tmp_path / file_type)))
        assert data.conversational == (fmt in CONVERSATIONAL), file_type
        got = list(zip(data.pairs["prompt"], data.pairs["chosen"], data.pairs["rejected"]))
        assert got == expected, file_type
        assert list(data.pairs.columns[:4]) == ["pair_id", "prompt", "chosen", "rejected"]
        fingerprints.add(data.fingerprint)
    assert len(fingerprints) == 1  # same content, same fingerprint, whatever the file type


def test_rewardbench_ids_and_extras(tmp_path: Path) -> None:
    data = load_preference_data(str(write(FORMATS["rewardbench"][0], tmp_path / "rb.jsonl")))
    assert data.pairs["pair_id"].tolist() == ["30", "7"]
    assert data.pairs["subset"].tolist() == ["math-prm", "trivia"]
    assert "id" not in data.pairs.columns


def test_ultrafeedback_keeps_scores(tmp_path: Path) -> None:
    data = load_preference_data(str(write(FORMATS["ultrafeedback"][0], tmp_path / "uf.parquet")))
    assert data.pairs["score_chosen"].tolist() == [8.0, 9.0]


def test_pair_id_is_row_index_without_id_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n{"prompt": "d", "chosen": "e", '
                    '"rejected": "f"}\n')
    assert load_preference_data(str(path)).pairs["pair_id"].tolist() == ["0", "1"]


def test_column_map_and_limit(tmp_path: Path) -> None:
    records = [{"question": f"q{i}", "good": f"g{i}", "bad": f"b{i}", "uid": f"u{i}"} for i in range(5)]
    path = write(records, tmp_path / "d.csv")
    data = load_preference_data(str(path), column_map={"question": "prompt", "good": "chosen", "bad": "rejected",
                                                       "uid": "id"}, limit=3)
    assert data.pairs["pair_id"].tolist() == ["u0", "u1", "u2"]
    assert data.pairs[["prompt", "chosen", "rejected"]].values.tolist() == [[f"q{i}", f"g{i}", f"b{i}"]
                                                                           for i in range(3)]
    assert load_preference_data(str(write(FORMATS["hh_rlhf"][0], tmp_path / "h.parquet")), limit=1).pairs.shape[0] == 1


def test_fingerprint_depends_on_content(tmp_path: Path) -> None:
    records = FORMATS["standard_explicit"][0]
    a = load_preference_data(str(write(records, tmp_path / "a.jsonl")))
    b = load_preference_data(str(write([records[0], {**records[1], "chosen": " warm."}], tmp_path / "b.jsonl")))
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 64


def test_json_variants(tmp_path: Path) -> None:
    records, expected = FORMATS["standard_explicit"]
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": records}))
    (tmp_path / "columns.json").write_text(json.dumps({k: [r[k] for r in records] for k in records[0]}))
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name in ("wrapped.json", "columns.json", "lines.json"):
        data = load_preference_data(str(tmp_path / name))
        assert list(zip(data.pairs["prompt"], data.pairs["chosen"], data.pairs["rejected"])) == expected, name


def test_display_text() -> None:
    assert display_text("plain") == "plain"
    assert display_text([SYS, U1]) == "system: Be brief.\n\nuser: What color is the sky?"
    assert display_text(json.dumps([U1])) == "user: What color is the sky?"
    assert display_text(None) == ""


# --- bad inputs: (file name, file content as bytes or records, column_map, words the message must contain)
def _jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}
BAD_INPUTS = {
    "missing_columns": ("d.jsonl", _jsonl({"question": "q", "good": "g"}), None, ["missing column", "'chosen'",
                                                                               "found", "'question'"]),
    "empty_response": ("d.jsonl", _jsonl(GOOD, {**GOOD, "rejected": ""}), None, ["row 1", "'rejected'", "empty"]),
    "non_string_response": ("d.jsonl", _jsonl(GOOD, {**GOOD, "chosen": 3}), None, ["row 1", "'chosen'", "int"]),
    "nan_response": ("d.json", b'[{"prompt": "p", "chosen": NaN, "rejected": "r"}]', None, ["row 0", "NaN"]),
    "null_response": ("d.jsonl", _jsonl(GOOD, GOOD, {**GOOD, "chosen": None}), None,
                      ["row 2", "line 3", "'chosen'", "null"]),
    "truncated_jsonl": ("d.jsonl", _jsonl(GOOD, GOOD)[:-9], None, ["line 2", "invalid JSON", "truncated"]),
    "corrupt_json": ("d.json", b'[{"prompt": "p",\n "chosen": "c" "rejected": "r"}]', None, ["line 2", "invalid JSON"]),
    "non_utf8": ("d.jsonl", _jsonl(GOOD) + b'{"prompt": "\xff\xfe"}\n', None, ["UTF-8", "byte offset", "line 2"]),
    "empty_file": ("d.jsonl", b"", None, ["empty dataset"]),
    "unknown_extension": ("d.txt", b"hello", None, ["unknown file type", "'.txt'"]),
    "binary_jsonl": ("d.jsonl", bytes(range(256)) * 4, None, ["binary"]),
    "no_shared_prefix": ("d.jsonl", _jsonl({"chosen": "yes", "rejected": "no"}), None, ["row 0", "implicit prompt"]),
    "hh_without_assistant": ("d.jsonl", _jsonl({"chosen": "\n\nHuman: hi there", "rejected": "\n\nHuman: hi you"}),
                             None, ["row 0", "Assistant"]),
    "bad_role": ("d.jsonl", _jsonl({"prompt": [{"role": "robot", "content": "x"}], "chosen": [A_BLUE],
                                    "rejected": [A_GREEN]}), None, ["row 0", "'prompt'", "message 0", "'robot'"]),
    "missing_content": ("d.jsonl", _jsonl({"prompt": [U1], "chosen": [A_BLUE], "rejected": [{"role": "assistant"}]}),
                        None, ["row 0", "'rejected'", "content"]),
    "duplicate_ids": ("d.jsonl", _jsonl({**GOOD, "id": 1}, {**GOOD, "id": 2}, {**GOOD, "id": 1}), None,
                      ["row 2", "duplicate id '1'", "row 0"]),
    "corrupt_parquet": ("d.parquet", b"PAR1 this is not parquet at all", None, ["Parquet"]),
    "truncated_gzip": ("d.jsonl.gz", gzip.compress(_jsonl(GOOD) * 50)[:40], None, ["gzip"]),
    "bad_column_map": ("d.jsonl", _jsonl(GOOD), {"question": "prompt"}, ["'question'", "found"]),
    "mixed_kinds": ("d.jsonl", _jsonl({"chosen": [U1, A_BLUE], "rejected": [U1, A_GREEN]},
                                      {"chosen": "text", "rejected": "text2"}), None, ["row 1", "'chosen'", "list"]),
    "ragged_csv": ("d.csv", b"prompt,chosen,rejected\np,c,r\np,c\n", None, ["line 3", "2 fields"]),
    "list_prompt_text_responses": ("d.jsonl", _jsonl({"prompt": [U1], "chosen": "a", "rejected": "b"}), None,
                                   ["row 0", "'prompt'"]),
    "empty_csv_cell": ("d.csv", b"prompt,chosen,rejected\np,c,r\np,,r\n", None, ["row 1", "'chosen'", "empty"]),
    "not_an_object": ("d.jsonl", b'[1, 2]\n', None, ["line 1", "JSON object"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_input_error(case: str, tmp_path: Path) -> None:
    name, content, column_map, words = BAD_INPUTS[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_preference_data(str(path), column_map=column_map)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_bad_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="offline"):
        load_preference_data("someone/some-dataset")
    with pytest.raises(InputError, match="no such file"):
        load_preference_data(str(tmp_path / "missing.jsonl"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="save_to_disk"):
        load_preference_data(str(tmp_path / "folder"))
    write([GOOD], tmp_path / "ok.jsonl")
    with pytest.raises(InputError, match="limit"):
        load_preference_data(str(tmp_path / "ok.jsonl"), limit=0)


def test_nan_id_is_rejected(tmp_path: Path) -> None:
    path = write([{**GOOD, "id": 1.0}, {**GOOD, "id": math.nan}], tmp_path / "d.parquet")
    with pytest.raises(InputError, match=r"row 1, column 'id': missing id"):
        load_preference_data(str(path))
