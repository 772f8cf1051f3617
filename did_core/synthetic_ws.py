"""A synthetic workspace written through the real writers: for dashboard tests and read benchmarks.

No model is run: log-probs are drawn at random so that they look like a DPO run (chosen likelihood
falls more slowly than rejected as the step grows). Deterministic from `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from did_core.store import fingerprint
from did_core.workspace import Workspace

_WORDS = ["the", "model", "prefers", "this", "answer", "because", "it", "is", "kind", "and", "clear", "short"]


@dataclass(frozen=True)
class SyntheticData:
    """Stands in for data.PreferenceData (same fields `Workspace.write_dataset` reads)."""

    pairs: pd.DataFrame
    conversational: bool
    source: str
    fingerprint: str


def _pieces(rng: np.random.Generator, n: int) -> list[str]:
    return [" " + _WORDS[i] for i in rng.integers(0, len(_WORDS), n)]


def make_synthetic_workspace(root: str | Path, n_pairs: int = 200, n_checkpoints: int = 3, seed: int = 0,
                             tokens: bool = True, run_name: str = "synthetic", beta: float = 0.1,
                             chunk_size: int = 1000, mean_tokens: int = 12) -> str:
    """Write a dataset, a reference score, `n_checkpoints` checkpoint scores and a run; return the run name.

    Token rows are consistent with the pair rows (sequence log-prob = sum of token log-probs).
    10,000 pairs × 10 checkpoints with tokens=False takes about a second.
    """
    rng = np.random.default_rng(seed)
    ws = Workspace(root)
    ids = [str(i) for i in range(n_pairs)]
    n_c = rng.integers(1, 2 * mean_tokens, n_pairs)
    n_r = rng.integers(1, 2 * mean_tokens, n_pairs)
    token_ids = {side: [rng.integers(6, 90, k) for k in n] for side, n in (("chosen", n_c), ("rejected", n_r))}
    text = {side: ["".join(_pieces(np.random.default_rng(int(t.sum()) + 7 * j), len(t))) for j, t in
                   enumerate(token_ids[side])] for side in ("chosen", "rejected")}
    data_df = pd.DataFrame({"pair_id": ids, "prompt": [f"Question {i}?" for i in ids],
                            "chosen": text["chosen"], "rejected": text["rejected"]})
    data = SyntheticData(data_df, False, f"synthetic:{seed}", fingerprint("synthetic-data", n_pairs, seed,
                                                                          mean_tokens))
    ws.write_dataset(data)
    base = {side: [rng.normal(-2.0, 0.7, len(t)).astype(np.float32) for t in token_ids[side]]
            for side in ("chosen", "rejected")}
    models = [("reference", None)] + [(f"checkpoint-{100 * (k + 1)}", 100 * (k + 1)) for k in range(n_checkpoints)]
    entries = []
    for m, (name, step) in enumerate(models):
        drift = {"chosen": -0.02 * m, "rejected": -0.06 * m}
        logps = {side: [b + np.float32(drift[side]) + rng.normal(0, 0.05, len(b)).astype(np.float32) * (m > 0)
                        for b in base[side]] for side in base}
        ent = {side: [np.full(len(b), np.nan, np.float32) if m == 0 else
                      rng.uniform(0.5, 3.0, len(b)).astype(np.float32) for b in base[side]] for side in base}
        score_fp = fingerprint("synthetic-score", data.fingerprint, name, seed)
        store = ws.score_store(score_fp, {"model": {"name": name, "path": f"synthetic/{name}", "role":
                                                    "reference" if m == 0 else "policy", "step": step},
                                          "dataset": data.fingerprint, "reference_score": None,
                                          "settings": {"synthetic": True}, "n_pairs": n_pairs,
                                          "chunk_size": chunk_size, "model_fingerprint": None})
        for c, lo in enumerate(range(0, n_pairs, chunk_size)):
            sl = range(lo, min(lo + chunk_size, n_pairs))
            pairs = pd.DataFrame({
                "pair_id": [ids[j] for j in sl],
                "logp_chosen": [float(logps["chosen"][j].sum(dtype=np.float64)) for j in sl],
                "logp_rejected": [float(logps["rejected"][j].sum(dtype=np.float64)) for j in sl],
                "n_tokens_chosen": [int(n_c[j]) for j in sl], "n_tokens_rejected": [int(n_r[j]) for j in sl],
                "dropped_chosen": 0, "dropped_rejected": 0,
                "did_entropy_chosen": [float(ent["chosen"][j].mean()) for j in sl],
                "did_entropy_rejected": [float(ent["rejected"][j].mean()) for j in sl],
                "did_entropy_max_chosen": [float(ent["chosen"][j].max()) for j in sl],
                "did_entropy_max_rejected": [float(ent["rejected"][j].max()) for j in sl],
            })
            toks = None
            if tokens:
                rows = {k: [] for k in ("pair_id", "side", "position", "token_id", "logp", "did_entropy")}
                for j in sl:
                    for side in ("chosen", "rejected"):
                        k = len(token_ids[side][j])
                        rows["pair_id"].append(np.full(k, ids[j], dtype=object))
                        rows["side"].append(np.full(k, side, dtype=object))
                        rows["position"].append(np.arange(k, dtype=np.int32))
                        rows["token_id"].append(token_ids[side][j].astype(np.int32))
                        rows["logp"].append(logps[side][j])
                        rows["did_entropy"].append(ent[side][j])
                toks = pd.DataFrame({k: np.concatenate(v) for k, v in rows.items()})
                toks["token"] = [_WORDS[t % len(_WORDS)] for t in toks["token_id"]]
            store.write_chunk(c, pairs, toks)
        store.mark_complete()
        entries.append({"name": name, "path": f"synthetic/{name}", "step": step, "score": score_fp})
    ws.write_run({"name": run_name, "created": "1970-01-01T00:00:00+00:00",
                  "dataset": {"fingerprint": data.fingerprint, "source": data.source, "n_pairs": n_pairs,
                              "conversational": False},
                  "beta": beta, "settings": {"synthetic": True}, "reference": entries[0],
                  "checkpoints": entries[1:], "trainer_log_history": [], "extra": {"synthetic": True}})
    return run_name
