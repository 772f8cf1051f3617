"""A synthetic workspace written through the real writers: for dashboard tests and read benchmarks.

No model is run: log-probs are drawn at random so that they look like a DPO run (chosen likelihood
falls more slowly than rejected as the step grows). Deterministic from `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from did_core.files import relaxed_durability
from did_core.fingerprints import fingerprint
from did_core.manifest import RunManifest
from did_core.workspace import Workspace

_WORDS = ["the", "model", "prefers", "this", "answer", "because", "it", "is", "kind", "and", "clear", "short"]


@dataclass(frozen=True)
class SyntheticData:
    """Stands in for data.PreferenceData (same fields `Workspace.write_dataset` reads)."""

    pairs: pd.DataFrame
    conversational: bool
    source: str
    fingerprint: str


def make_synthetic_workspace(root: str | Path, n_pairs: int = 200, n_checkpoints: int = 3, seed: int = 0,
                             tokens: bool = True, run_name: str = "synthetic", beta: float = 0.1,
                             chunk_size: int = 1000, mean_tokens: int = 12, drift: float = 1.0,
                             stored_extras: bool = True) -> str:
    """Write a dataset, a reference score, `n_checkpoints` checkpoint scores and a run; return the run name.

    Token rows are consistent with the pair rows (sequence log-prob = sum of token log-probs) and
    with the dataset text (each token is one word). Checkpoints are `checkpoint-100`, `-200`, ...;
    the reference is named `reference`. `drift` scales how far the checkpoints move from the reference:
    several runs with the same `seed` and sizes share the dataset and the reference score (the same
    fingerprints), like a sweep, and differ in their checkpoints. Everything is vectorized over flat token arrays, so that
    10,000 pairs × 10 checkpoints take a few seconds. `stored_extras`: CHES (the reference's) and the
    squeezing columns, drawn from a generator of their own (False: stores as written before they existed).
    """
    with relaxed_durability():
        return _build(Workspace(root), n_pairs, n_checkpoints, seed, tokens, run_name, beta, chunk_size, mean_tokens,
                      drift, stored_extras)


def _build(ws: Workspace, n_pairs: int, n_checkpoints: int, seed: int, tokens: bool, run_name: str, beta: float,
           chunk_size: int, mean_tokens: int, drift: float = 1.0, stored_extras: bool = True) -> str:
    rng = np.random.default_rng(seed)
    extra_rng = np.random.default_rng([seed, 16])  # CHES/squeezing: the other columns' draws stay as they were
    ids = np.array([str(i) for i in range(n_pairs)], dtype=object)
    sides = ("chosen", "rejected")
    n_tok = {side: rng.integers(1, 2 * mean_tokens, n_pairs) for side in sides}  # (N,) tokens per response
    start = {side: np.concatenate([[0], np.cumsum(n_tok[side])[:-1]]) for side in sides}  # (N,) offsets
    tok_ids = {side: rng.integers(6, 90, int(n_tok[side].sum())).astype(np.int32) for side in sides}  # (T,)
    words = np.array([" " + w for w in _WORDS], dtype=object)
    pieces = {side: words[tok_ids[side] % len(_WORDS)] for side in sides}  # (T,) decoded token strings
    text = {side: ["".join(pieces[side][a:a + k]) for a, k in zip(start[side], n_tok[side])] for side in sides}
    data_df = pd.DataFrame({"pair_id": ids, "prompt": [f"Question {i}?" for i in ids],
                            "chosen": text["chosen"], "rejected": text["rejected"]})
    data = SyntheticData(data_df, False, f"synthetic:{seed}",
                         fingerprint("synthetic-data", n_pairs, seed, mean_tokens))
    ws.write_dataset(data)
    base = {side: rng.normal(-2.0, 0.7, len(tok_ids[side])).astype(np.float32) for side in sides}
    models = [("reference", None)] + [(f"checkpoint-{100 * (k + 1)}", 100 * (k + 1)) for k in range(n_checkpoints)]
    entries = []
    for m, (name, step) in enumerate(models):
        # DPO-like drift: both likelihoods fall, the rejected one faster
        shift = {"chosen": -0.02 * m * drift, "rejected": -0.06 * m * drift}
        logp = {s: base[s] + np.float32(shift[s]) + (m > 0) * rng.normal(0, 0.05, len(base[s])).astype(np.float32)
                for s in sides}
        ent = {s: (np.full(len(base[s]), np.nan, np.float32) if m == 0
                   else rng.uniform(0.5, 3.0, len(base[s])).astype(np.float32)) for s in sides}
        seq = {s: np.add.reduceat(logp[s].astype(np.float64), start[s]) for s in sides}
        ent_mean = {s: np.add.reduceat(ent[s].astype(np.float64), start[s]) / n_tok[s] for s in sides}
        ent_max = {s: np.maximum.reduceat(ent[s], start[s]).astype(np.float64) for s in sides}
        score_fp = fingerprint("synthetic-score", data.fingerprint, name, seed, *([drift] if m and drift != 1.0 else []))
        store = ws.score_store(score_fp, {"model": {"name": name, "path": f"synthetic/{name}", "role":
                                                    "reference" if m == 0 else "policy", "step": step},
                                          "dataset": data.fingerprint, "reference_score": None,
                                          "settings": {"synthetic": True}, "n_pairs": n_pairs,
                                          "chunk_size": chunk_size, "model_fingerprint": None})
        for c, lo in enumerate(range(0, n_pairs, chunk_size)):
            hi = min(lo + chunk_size, n_pairs)
            pairs = pd.DataFrame({"pair_id": ids[lo:hi], "dropped_chosen": 0, "dropped_rejected": 0})
            for s in sides:
                pairs[f"logp_{s}"] = seq[s][lo:hi]
                pairs[f"n_tokens_{s}"] = n_tok[s][lo:hi]
                pairs[f"did_entropy_{s}"] = ent_mean[s][lo:hi]
                pairs[f"did_entropy_max_{s}"] = ent_max[s][lo:hi]
            if stored_extras:
                k = hi - lo
                if m == 0:
                    pairs["ches"] = extra_rng.normal(-20.0, 5.0, k)
                    pairs["ches_norm"] = pairs["ches"] / 10.0
                for s in sides:
                    pairs[f"top1_prob_{s}"] = np.clip(extra_rng.normal(0.5 + 0.02 * m, 0.1, k), 0.05, 1.0)
                    pairs[f"token_entropy_{s}"] = np.clip(extra_rng.normal(1.5 - 0.05 * m, 0.3, k), 0.0, None)
            toks = pd.concat([_token_rows(ids, s, lo, hi, start[s], n_tok[s], tok_ids[s], pieces[s], logp[s], ent[s])
                              for s in sides], ignore_index=True) if tokens else None
            if stored_extras and toks is not None:  # per-token squeezing (drawn after the pair columns)
                toks["top1_prob"] = np.clip(extra_rng.normal(0.5 + 0.02 * m, 0.15, len(toks)), 0.01, 1.0).astype("float32")
                toks["token_entropy"] = np.clip(extra_rng.normal(1.5 - 0.05 * m, 0.4, len(toks)), 0.0, None).astype(
                    "float32")
            store.write_chunk(c, pairs, toks)
        store.mark_complete()
        entries.append({"name": name, "path": f"synthetic/{name}", "step": step, "score": score_fp})
    ws.write_run(RunManifest.from_json({"name": run_name, "created": "1970-01-01T00:00:00+00:00",
                  "dataset": {"fingerprint": data.fingerprint, "source": data.source, "n_pairs": n_pairs,
                              "conversational": False},
                  "beta": beta, "settings": {"synthetic": True}, "reference": entries[0],
                  "checkpoints": entries[1:], "trainer_log_history": [], "extra": {"synthetic": True}}))
    return run_name


def _token_rows(ids: np.ndarray, side: str, lo: int, hi: int, start: np.ndarray, n_tok: np.ndarray,
                tok_ids: np.ndarray, pieces: np.ndarray, logp: np.ndarray, ent: np.ndarray) -> pd.DataFrame:
    """Token rows of pairs [lo, hi) for one side, sliced out of the flat (T,) arrays."""
    a, b = int(start[lo]), int(start[hi - 1] + n_tok[hi - 1])
    counts = n_tok[lo:hi]
    return pd.DataFrame({
        "pair_id": np.repeat(ids[lo:hi], counts), "side": side,
        "position": (np.arange(a, b) - np.repeat(start[lo:hi], counts)).astype(np.int32),
        "token_id": tok_ids[a:b], "token": pieces[a:b], "logp": logp[a:b], "did_entropy": ent[a:b],
    })
