"""A synthetic workspace written through the real writers: for dashboard tests and read benchmarks.

No model is run: log-probs are drawn at random so that they look like a DPO run (chosen likelihood
falls more slowly than rejected as the step grows). Deterministic from `seed`.

Two kinds of token rows (`lengths`):

- "uniform" (the default; what every test's workspace has): response lengths uniform on
  [1, 2·mean_tokens), token ids from 84 values, one of 12 words each; drawn for the whole run at once.
- "lognormal" (UltraFeedback-like, for benchmarks at scale: `bench/dashboard_bench.py --tokens-mean`):
  lengths lognormal with mean `mean_tokens` (σ = 0.7, so the median is ~0.78× the mean and one
  response in a hundred is ~4× it), capped at `max_tokens`; token ids Zipf-distributed (P ∝ 1/rank)
  over a 32,000-piece vocabulary, each piece its own string; token rows in the scorer's order (each
  pair's chosen rows, then its rejected ones). Drawn chunk by chunk from generators
  seeded by (seed, chunk[, model]), so that memory stays that of one chunk at any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from did_core.files import relaxed_durability
from did_core.fingerprints import fingerprint
from did_core.manifest import RunManifest
from did_core.run_settings import DEFAULT_BETA
from did_core.workspace import ScoreStore, Workspace

_WORDS = ["the", "model", "prefers", "this", "answer", "because", "it", "is", "kind", "and", "clear", "short"]
SIDES = ("chosen", "rejected")
LENGTHS = ("uniform", "lognormal")
VOCAB = 32_000
"""The lognormal kind's vocabulary size (token ids 6 .. 6 + VOCAB)."""
SIGMA = 0.7
"""The lognormal kind's σ of log length."""


@dataclass(frozen=True)
class SyntheticData:
    """Stands in for data.PreferenceData (same fields `Workspace.write_dataset` reads)."""

    pairs: pd.DataFrame
    conversational: bool
    source: str
    fingerprint: str


def make_synthetic_workspace(root: str | Path, n_pairs: int = 200, n_checkpoints: int = 3, seed: int = 0,
                             tokens: bool = True, run_name: str = "synthetic", beta: float = DEFAULT_BETA,
                             chunk_size: int = 1000, mean_tokens: int = 12, drift: float = 1.0,
                             stored_extras: bool = True, lengths: str = "uniform", max_tokens: int | None = None,
                             token_models: int | None = None) -> str:
    """Write a dataset, a reference score, `n_checkpoints` checkpoint scores and a run; return the run name.

    Token rows are consistent with the pair rows (sequence log-prob = sum of token log-probs) and
    with the dataset text (each token is one word). Checkpoints are `checkpoint-100`, `-200`, ...;
    the reference is named `reference`. `drift` scales how far the checkpoints move from the reference:
    several runs with the same `seed` and sizes share the dataset and the reference score (the same
    fingerprints), like a sweep, and differ in their checkpoints. Everything is vectorized over flat token arrays, so that
    10,000 pairs × 10 checkpoints take a few seconds. `stored_extras`: CHES (the reference's) and the
    squeezing columns, drawn from a generator of their own (False: stores as written before they existed).
    `lengths`: "uniform" or "lognormal" (module docstring); `max_tokens`: the lognormal cap (default
    8 × mean_tokens). `token_models`: only the reference and the last `token_models` checkpoints store
    token rows (None: every model, when `tokens`).
    """
    if lengths not in LENGTHS:
        raise ValueError(f"lengths must be one of {LENGTHS}, got {lengths!r}")
    draws = (_Uniform(seed, n_pairs, mean_tokens) if lengths == "uniform"
             else _Lognormal(seed, n_pairs, mean_tokens, max_tokens or 8 * mean_tokens, chunk_size))
    with relaxed_durability():
        return _build(Workspace(root), draws, n_checkpoints, tokens, run_name, beta, chunk_size, drift, stored_extras,
                      token_models)


class _Uniform:
    """The default draws, as they always were: the whole run's (T,) token arrays at once from one generator."""

    def __init__(self, seed: int, n_pairs: int, mean_tokens: int) -> None:
        self.seed, self.n_pairs, self.rng = seed, n_pairs, np.random.default_rng(seed)
        self.fingerprint = fingerprint("synthetic-data", n_pairs, seed, mean_tokens)
        self.extra = np.random.default_rng([seed, 16])  # CHES/squeezing: the other columns' draws stay as they were
        rng = self.rng
        self.n_tok = {s: rng.integers(1, 2 * mean_tokens, n_pairs) for s in SIDES}  # (N,) tokens per response
        self.start = {s: np.concatenate([[0], np.cumsum(self.n_tok[s])[:-1]]) for s in SIDES}  # (N,) offsets
        self.ids = {s: rng.integers(6, 90, int(self.n_tok[s].sum())).astype(np.int32) for s in SIDES}  # (T,)
        words = np.array([" " + w for w in _WORDS], dtype=object)
        self.pieces = {s: words[self.ids[s] % len(_WORDS)] for s in SIDES}  # (T,) decoded token strings
        self.base = {s: rng.normal(-2.0, 0.7, len(self.ids[s])).astype(np.float32) for s in SIDES}
        self._model = -1
        self.pair_major = False  # token rows: every chosen row of the chunk, then every rejected one

    def _span(self, s: str, lo: int, hi: int) -> slice:
        return slice(int(self.start[s][lo]), int(self.start[s][hi - 1] + self.n_tok[s][hi - 1]))

    def responses(self, lo: int, hi: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """{side: (n_tok (n,), token ids (t,), pieces (t,), base log-probs (t,))} of pairs [lo, hi)."""
        return {s: (self.n_tok[s][lo:hi], self.ids[s][self._span(s, lo, hi)], self.pieces[s][self._span(s, lo, hi)],
                    self.base[s][self._span(s, lo, hi)]) for s in SIDES}

    def noise(self, m: int, lo: int, hi: int) -> tuple[dict, dict, np.random.Generator]:
        """({side: logp noise (t,)}, {side: DID entropy (t,), NaN for the reference}, the extras' generator)."""
        if m != self._model:  # models come in order, each drawn over the whole run when its first chunk comes
            self._model, rng = m, self.rng
            self._noise = {s: (m > 0) * rng.normal(0, 0.05, len(self.base[s])).astype(np.float32) for s in SIDES}
            self._ent = {s: (np.full(len(self.base[s]), np.nan, np.float32) if m == 0
                             else rng.uniform(0.5, 3.0, len(self.base[s])).astype(np.float32)) for s in SIDES}
        return ({s: self._noise[s][self._span(s, lo, hi)] for s in SIDES},
                {s: self._ent[s][self._span(s, lo, hi)] for s in SIDES}, self.extra)


class _Lognormal:
    """UltraFeedback-like draws (module docstring), chunk by chunk: nothing is held beyond one chunk."""

    def __init__(self, seed: int, n_pairs: int, mean_tokens: int, max_tokens: int, chunk_size: int) -> None:
        self.seed, self.n_pairs, self.mean, self.cap, self.chunk = seed, n_pairs, mean_tokens, max_tokens, chunk_size
        self.fingerprint = fingerprint("synthetic-data", n_pairs, seed, mean_tokens, "lognormal", max_tokens,
                                       chunk_size, VOCAB)
        words = np.array([" " + w for w in _WORDS], dtype=object)
        rank = np.arange(VOCAB)
        self.vocab = np.where(rank < len(_WORDS), words[rank % len(_WORDS)],
                              words[rank % len(_WORDS)] + (rank // len(_WORDS)).astype(str).astype(object))
        self._last: tuple = (None, None)
        self.pair_major = True  # token rows in the scorer's order

    def responses(self, lo: int, hi: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        if self._last[0] == (lo, hi):  # each model's chunk asks twice (its rows, its noise's lengths)
            return self._last[1]
        rng = np.random.default_rng([self.seed, 1, lo // self.chunk])
        mu = np.log(self.mean) - SIGMA ** 2 / 2  # E[lognormal(mu, σ)] = mean
        out = {}
        for s in SIDES:
            n_tok = np.clip(np.rint(rng.lognormal(mu, SIGMA, hi - lo)), 1, self.cap).astype(np.int64)
            rank = np.minimum(np.exp(rng.random(int(n_tok.sum())) * np.log(VOCAB)).astype(np.int32) - 1, VOCAB - 1)
            out[s] = n_tok, rank + 6, self.vocab[rank], rng.normal(-2.0, 0.7, len(rank)).astype(np.float32)
        self._last = ((lo, hi), out)
        return out

    def noise(self, m: int, lo: int, hi: int) -> tuple[dict, dict, np.random.Generator]:
        rng = np.random.default_rng([self.seed, 2, m, lo // self.chunk])
        n = {s: int(t[0].sum()) for s, t in self.responses(lo, hi).items()}
        return ({s: rng.normal(0, 0.05 * (m > 0), n[s]).astype(np.float32) for s in SIDES},
                {s: (np.full(n[s], np.nan, np.float32) if m == 0 else rng.uniform(0.5, 3.0, n[s]).astype(np.float32))
                 for s in SIDES}, np.random.default_rng([self.seed, 16, m, lo // self.chunk]))


def _build(ws: Workspace, draws: _Uniform | _Lognormal, n_checkpoints: int, tokens: bool, run_name: str, beta: float,
           chunk_size: int, drift: float, stored_extras: bool, token_models: int | None) -> str:
    n_pairs = draws.n_pairs
    ids = np.array([str(i) for i in range(n_pairs)], dtype=object)
    spans = [(lo, min(lo + chunk_size, n_pairs)) for lo in range(0, n_pairs, chunk_size)]
    data = _write_dataset(ws, draws, ids, spans)
    models = [("reference", None)] + [(f"checkpoint-{100 * (k + 1)}", 100 * (k + 1)) for k in range(n_checkpoints)]
    entries = []
    for m, (name, step) in enumerate(models):
        with_tokens = tokens and (token_models is None or m == 0 or m > n_checkpoints - token_models)
        score_fp = fingerprint("synthetic-score", data.fingerprint, name, draws.seed,
                               *([drift] if m and drift != 1.0 else []))
        store = ws.score_store(score_fp, {"model": {"name": name, "path": f"synthetic/{name}", "role":
                                                    "reference" if m == 0 else "policy", "step": step},
                                          "dataset": data.fingerprint, "reference_score": None,
                                          "settings": {"synthetic": True}, "n_pairs": n_pairs,
                                          "chunk_size": chunk_size, "model_fingerprint": None})
        for c, (lo, hi) in enumerate(spans):
            _write_chunk(store, c, draws, m, drift, ids, lo, hi, with_tokens, stored_extras)
        store.mark_complete()
        entries.append({"name": name, "path": f"synthetic/{name}", "step": step, "score": score_fp})
    ws.write_run(RunManifest.from_json({"name": run_name, "created": "1970-01-01T00:00:00+00:00",
                  "dataset": {"fingerprint": data.fingerprint, "source": data.source, "n_pairs": n_pairs,
                              "conversational": False},
                  "beta": beta, "settings": {"synthetic": True}, "reference": entries[0],
                  "checkpoints": entries[1:], "trainer_log_history": [], "extra": {"synthetic": True}}))
    return run_name


def _write_dataset(ws: Workspace, draws: _Uniform | _Lognormal, ids: np.ndarray, spans: list) -> SyntheticData:
    """The dataset's text (each response the concatenation of its token pieces), stored; the data it stands for."""
    text: dict[str, list[str]] = {s: [] for s in SIDES}
    for lo, hi in spans:
        for s, (n_tok, _, pieces, _) in draws.responses(lo, hi).items():
            start = np.concatenate([[0], np.cumsum(n_tok)[:-1]])
            text[s] += ["".join(pieces[a:a + k]) for a, k in zip(start, n_tok)]
    data_df = pd.DataFrame({"pair_id": ids, "prompt": [f"Question {i}?" for i in ids],
                            "chosen": text["chosen"], "rejected": text["rejected"]})
    data = SyntheticData(data_df, False, f"synthetic:{draws.seed}", draws.fingerprint)
    ws.write_dataset(data)
    return data


def _write_chunk(store: ScoreStore, c: int, draws: _Uniform | _Lognormal, m: int, drift: float, ids: np.ndarray,
                 lo: int, hi: int, with_tokens: bool, stored_extras: bool) -> None:
    """Chunk `c` (pairs [lo, hi)) of model `m`: pair rows and, `with_tokens`, token rows."""
    resp = draws.responses(lo, hi)
    noise, ent, extra_rng = draws.noise(m, lo, hi)
    # DPO-like drift: both likelihoods fall, the rejected one faster
    shift = {"chosen": -0.02 * m * drift, "rejected": -0.06 * m * drift}
    logp = {s: resp[s][3] + np.float32(shift[s]) + noise[s] for s in SIDES}
    pairs = pd.DataFrame({"pair_id": ids[lo:hi], "dropped_chosen": 0, "dropped_rejected": 0})
    for s in SIDES:
        n_tok = resp[s][0]
        start = np.concatenate([[0], np.cumsum(n_tok)[:-1]])
        pairs[f"logp_{s}"] = np.add.reduceat(logp[s].astype(np.float64), start)
        pairs[f"n_tokens_{s}"] = n_tok
        pairs[f"did_entropy_{s}"] = np.add.reduceat(ent[s].astype(np.float64), start) / n_tok
        pairs[f"did_entropy_max_{s}"] = np.maximum.reduceat(ent[s], start).astype(np.float64)
    if stored_extras:
        k = hi - lo
        if m == 0:
            pairs["ches"] = extra_rng.normal(-20.0, 5.0, k)
            pairs["ches_norm"] = pairs["ches"] / 10.0
        for s in SIDES:
            pairs[f"top1_prob_{s}"] = np.clip(extra_rng.normal(0.5 + 0.02 * m, 0.1, k), 0.05, 1.0)
            pairs[f"token_entropy_{s}"] = np.clip(extra_rng.normal(1.5 - 0.05 * m, 0.3, k), 0.0, None)
    toks = pd.concat([_token_rows(ids[lo:hi], s, resp[s], logp[s], ent[s]) for s in SIDES],
                     ignore_index=True) if with_tokens else None
    if toks is not None and draws.pair_major:  # the scorer's order (chunked.py): each pair's chosen, then rejected
        key = np.concatenate([2 * np.repeat(np.arange(hi - lo), resp[s][0]) + k for k, s in enumerate(SIDES)])
        toks = toks.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)
    if stored_extras and toks is not None:  # per-token squeezing (drawn after the pair columns)
        toks["top1_prob"] = np.clip(extra_rng.normal(0.5 + 0.02 * m, 0.15, len(toks)), 0.01, 1.0).astype("float32")
        toks["token_entropy"] = np.clip(extra_rng.normal(1.5 - 0.05 * m, 0.4, len(toks)), 0.0, None).astype("float32")
    store.write_chunk(c, pairs, toks)


def _token_rows(ids: np.ndarray, side: str, resp: tuple, logp: np.ndarray, ent: np.ndarray) -> pd.DataFrame:
    """Token rows of one side of a chunk's pairs `ids`, from that chunk's (t,) arrays."""
    n_tok, tok_ids, pieces, _ = resp
    start = np.concatenate([[0], np.cumsum(n_tok)[:-1]])
    return pd.DataFrame({
        "pair_id": np.repeat(ids, n_tok), "side": side,
        "position": (np.arange(len(tok_ids)) - np.repeat(start, n_tok)).astype(np.int32),
        "token_id": tok_ids, "token": pieces, "logp": logp, "did_entropy": ent,
    })
