"""The scoring engine: exact per-token log-probs of chosen and rejected responses under a reference
and any number of policies, with as little compute as the maths allows.

What makes it fast (docs/ARCHITECTURE.md, "Engine"), and why each trick keeps the numbers exact:

- Pairs are sorted by length and grouped by a budget of padded tokens, so padding stays small;
  results are put back in input order, and nothing but float rounding depends on the grouping.
- The prompt is run once per pair. Preferred ("tree"): one row `prompt + chosen + rejected` with a
  4-D attention mask in which rejected tokens see the prompt and themselves but not chosen, and
  explicit `position_ids` restart rejected where the prompt ended: exactly one pass over every
  needed token, one forward call per batch, no padding between chosen and rejected.
  Fallback ("repeat", for models that refuse 4-D masks): the right-padded prompt runs with
  `use_cache=True`, its key/value cache is repeated for chosen and rejected, and the completions
  continue from it; the 2-D mask hides the prompt padding and `position_ids` bridge the gap.
- The last completion token is never fed (nothing reads its output), and the output head runs
  only on the hidden rows that predict a response token: the last prompt position predicts the
  first completion token, completion position j predicts token j+1.
- The reference runs once per batch and serves every policy (token-level DID entropy needs its
  full next-token distribution at the same rows).
- What else falls out of those passes, at no extra forward: the top-1 probability and next-token
  entropy of every scored row (squeezing: `ches.head_stats`, in the same head chunk), and CHES per
  pair from the reference's head inputs (`ches.ches_rows`, float64).

Each model is first checked on a tiny probe against a plain full forward; a model where the shared
prompt or the bare head would give different numbers (sliding windows, logit soft-capping, …) falls
back to full-sequence forwards and/or the model's own logits.

Why one module of ~590 lines: the batching, the shared-prompt layout, the probe and the head
share one set of layout rules (`_strategy`, `padded_cost`); split apart, each would need the others.
(The maths of the head pass and of CHES lives in `ches.py` and `logprobs.py`.)
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache

from did_core.ches import ches_rows, head_stats
from did_core.logprobs import did_entropy, log_softmax, token_logprobs


class PairLike(Protocol):
    """What the engine reads from `tokenization.TokenizedPair` (duck-typed)."""

    pair_id: str
    prompt_ids: Sequence[int]
    chosen_ids: Sequence[int]
    rejected_ids: Sequence[int]


@dataclass
class ResponseScores:
    """Scores of one response (chosen or rejected) under one model."""

    token_logps: np.ndarray
    """(T,) float32: log π(y_t | x, y_<t) for every scored response token."""
    did_entropy: np.ndarray | None
    """(T,) float32: H_t of softmax(log π − log π_ref) over the vocabulary (policies, token-level only)."""
    logp_sum: float
    """Σ_t log π(y_t | x, y_<t), accumulated in float64 (0.0 for an empty response)."""
    top1_prob: np.ndarray | None = None
    """(T,) float32: max_v π(v | x, y_<t), the model's own top-1 probability (squeezing; exact numerics)."""
    token_entropy: np.ndarray | None = None
    """(T,) float32: −Σ_v π(v|·) log π(v|·), the entropy of the model's next-token distribution."""

    @property
    def n_tokens(self) -> int:
        return int(self.token_logps.shape[0])


@dataclass
class PairScores:
    chosen: ResponseScores
    rejected: ResponseScores
    ches: float | None = None
    """CHES = ⟨S⁺, S⁻⟩ − ‖S⁺‖² over this model's head inputs (reference scores only; NaN when a
    response is empty)."""
    ches_norm: float | None = None
    """The same with the mean head input of each response in place of the sum."""


# Logits rows per head call: bounds the (rows, V) float32 temporaries to ~32 MiB.
_CHUNK_ELEMENTS = 1 << 23
CHUNK_BYTES = 4 * _CHUNK_ELEMENTS  # one head call's float32 (rows, V) logits: the unit of the engine's memory bound
STATS_ROWS = 16  # rows per log-prob/squeezing/DID pass: 16 x V floats stay in the cache (per-row maths: same values;
# a whole 32 MB chunk went to memory on each of the passes: 24 -> 7 ms per 170-row SmolLM2 chunk here)
# Keep the reference's (N, V) logits between policies only when they are this small.
_REF_CACHE_BYTES = 1 << 30
# Config fields that make logits differ from `lm_head(hidden)`: the bare-head path is then refused.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


Layout = Literal["tree", "repeat", "full"]


@dataclass(frozen=True)
class Strategy:
    """How the engine runs one model (chosen by a probe against a plain forward: `strategy_of`)."""

    layout: Layout  # tree: one row per pair, 4-D mask; repeat: prompt KV cache repeated; full: a row per response
    head_only: bool  # base model for hidden states, head applied to scored rows only


_STRATEGIES: weakref.WeakKeyDictionary[nn.Module, Strategy] = weakref.WeakKeyDictionary()


def strategy_of(model: nn.Module) -> Strategy | None:
    """The strategy the probe chose for `model` (None before its first batch)."""
    return _STRATEGIES.get(model)


def force_strategy(model: nn.Module, strategy: Strategy) -> None:
    """Use `strategy` for `model` instead of probing (every strategy gives the naive numbers on a model
    the probe accepts; tests force each one to prove it)."""
    _STRATEGIES[model] = strategy


class _Layout:
    """Padded inputs and gather indices for one batch of B pairs, shared by every model.

    Responses are ordered (c_0, r_0, c_1, r_1, …): response row k belongs to pair k // 2.
    Scored tokens are flattened in that order: N = Σ_k T_k.
    """

    def __init__(self, pairs: Sequence[PairLike], device: torch.device) -> None:
        self.device = device
        self.prompts = [list(p.prompt_ids) for p in pairs]
        self.responses = [list(r) for p in pairs for r in (p.chosen_ids, p.rejected_ids)]
        self.lengths = [len(r) for r in self.responses]  # T_k, (2B,)
        self.n_pairs = len(pairs)
        self.targets = self._tensor([t for r in self.responses for t in r])  # (N,)

    def _tensor(self, rows: Any) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    @staticmethod
    def _pad(seqs: list[list[int]], width: int) -> tuple[list[list[int]], list[list[int]]]:
        """Right-pad with token 0; returns (ids, mask) as nested lists of shape (len(seqs), width)."""
        ids = [s + [0] * (width - len(s)) for s in seqs]
        mask = [[1] * len(s) + [0] * (width - len(s)) for s in seqs]
        return ids, mask

    def rows(self, together: bool) -> dict[str, Any]:
        """Right-padded rows `prompt + chosen[:-1] + rejected[:-1]` (together: the tree layout) or one
        row per response `prompt + response[:-1]` (full layout). The last token predicts nothing we
        score, so it is not fed. `seg` marks each index: 0 prompt, 1 chosen, 2 rejected, 3 padding."""
        rows, seg, pos, src = [], [], [], []
        for b, prompt in enumerate(self.prompts):
            p = len(prompt)
            sides = [(1, self.responses[2 * b]), (2, self.responses[2 * b + 1])]
            for group in ([sides] if together else [[sd] for sd in sides]):
                rows.append(list(prompt))
                seg.append([0] * p)
                pos.append(list(range(p)))
                src.append([])
                for tag, resp in group:
                    start = len(rows[-1])  # completion position j >= 1 is predicted from start + j - 1
                    src[-1] += [p - 1 if j == 0 else start + j - 1 for j in range(len(resp))]
                    rows[-1] += resp[:-1]
                    seg[-1] += [tag] * len(resp[:-1])
                    pos[-1] += list(range(p, p + len(resp[:-1])))  # each completion continues the prompt
        width = max(len(x) for x in rows)
        seg_t = self._tensor([x + [3] * (width - len(x)) for x in seg])  # (R, L)
        return {"ids": self._tensor(self._pad(rows, width)[0]), "seg": seg_t,
                "pos": self._tensor([x + [0] * (width - len(x)) for x in pos]),  # (R, L); pads at 0: masked
                "src": self._tensor([r * width + i for r, row in enumerate(src) for i in row])}  # (N,)

    def shared(self) -> dict[str, Any]:
        """Inputs for the shared-prompt path, and where each scored token's predicting row lies in
        `pool = cat(prompt_last (B, X), completion_hidden.reshape(2B·Lc, X))`."""
        p_len = [len(p) for p in self.prompts]
        p_max = max(p_len)
        ids, mask = self._pad(self.prompts, p_max)
        feed = [r[:-1] for r in self.responses]  # the last token predicts nothing we score
        lc = max(len(f) for f in feed)
        c_ids, c_mask = self._pad(feed, lc)
        # Pad positions are set to 0: masked out anyway, and they never overflow a learned table.
        c_pos = [[p_len[k // 2] + j if j < len(f) else 0 for j in range(lc)] for k, f in enumerate(feed)]
        src = []
        for k, n in enumerate(self.lengths):
            src += ([k // 2] if n else []) + [self.n_pairs + k * lc + j - 1 for j in range(1, n)]
        t = self._tensor
        return {
            "prompt_ids": t(ids), "prompt_mask": t(mask),  # (B, P)
            "prompt_pos": t([list(range(p_max))] * self.n_pairs),  # (B, P)
            "prompt_last": t(p_len) - 1,  # (B,)
            "comp_ids": t(c_ids), "comp_mask": t(c_mask), "comp_pos": t(c_pos),  # (2B, Lc)
            "src": t(src),  # (N,)
        }


def padded_cost(pairs: Sequence[PairLike], layout: Layout = "tree") -> int:
    """Padded tokens a batch of `pairs` feeds through a model (the token budget's unit)."""
    if not pairs:
        return 0
    b = len(pairs)
    feed = [(len(p.prompt_ids), max(len(p.chosen_ids) - 1, 0), max(len(p.rejected_ids) - 1, 0)) for p in pairs]
    if layout == "tree":
        return b * max(sum(f) for f in feed)
    if layout == "repeat":
        return b * max(f[0] for f in feed) + 2 * b * max(max(f[1], f[2]) for f in feed)
    return 2 * b * max(f[0] + max(f[1], f[2]) for f in feed)


def length_order(pairs: Sequence[PairLike]) -> list[int]:
    """Indices of the pairs with something to score, longest first (total, then prompt): similar
    lengths share a batch, and an out-of-memory shows up on the first batch. Fully truncated pairs
    need no forward and are left out."""
    todo = [i for i, p in enumerate(pairs) if len(p.chosen_ids) or len(p.rejected_ids)]

    def key(i: int) -> tuple[int, int]:
        p = pairs[i]
        return len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids), len(p.prompt_ids)
    return sorted(todo, key=key, reverse=True)


def next_batch_end(pairs: Sequence[PairLike], order: list[int], pos: int, budget: int,
                   layouts: Sequence[Layout] = ("tree",)) -> int:
    """Greedy: extend the batch order[pos:end] while its padded cost, for the costliest of `layouts`,
    stays within `budget` (a batch always holds at least one pair)."""
    end = pos + 1
    while end < len(order):
        batch = [pairs[i] for i in order[pos:end + 1]]
        if max(padded_cost(batch, lay) for lay in layouts) > budget:
            break
        end += 1
    return end


def plan_batches(pairs: Sequence[PairLike], budget: int, layouts: Sequence[Layout] = ("tree",)) -> list[list[int]]:
    """The batches `score_batch_models` forms (before any out-of-memory halving), as pair indices."""
    order, out, pos = length_order(pairs), [], 0
    while pos < len(order):
        end = next_batch_end(pairs, order, pos, budget, layouts)
        out.append(order[pos:end])
        pos = end
    return out


def _call(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
          cache: DynamicCache | None, hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward: hidden states (B, L, H) of a base model, or logits (B, L, V) of a causal LM; and,
    with `hidden` on a causal LM, its last hidden states (B, L, H) (HF's `hidden_states[-1]`: after
    the final norm, the head's input), else None."""
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                              "use_cache": cache is not None, "return_dict": True}
    if cache is not None:
        params = inspect.signature(module.forward).parameters
        kwargs["cache" if "cache" in params else "past_key_values"] = cache
    if hidden:  # costs the other layers' states too, held until the forward returns (fallback path only)
        kwargs["output_hidden_states"] = True
    out = module(**kwargs)
    if hasattr(out, "logits"):
        return out.logits, (out.hidden_states[-1] if hidden else None)
    return out.last_hidden_state, None


def _features(model: nn.Module, strategy: Strategy, layout: _Layout) -> torch.Tensor:
    """The rows that predict each scored token: (N, H) hidden states, or (N, V) logits when the
    model's own head must be used."""
    return _features_and_hidden(model, strategy, layout, hidden=False)[0]


def _features_and_hidden(model: nn.Module, strategy: Strategy, layout: _Layout,
                         hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_features`, and with `hidden` the head inputs (N, H) of the same rows: the features themselves
    on the bare-head path, else the model's last hidden states from the same forward (no second one)."""
    body = model.base_model if strategy.head_only else model
    want = hidden and not strategy.head_only
    if strategy.layout in ("tree", "full"):
        t = layout.rows(together=strategy.layout == "tree")
        seg = t["seg"]  # (R, L)
        mask = (seg != 3).long()  # (R, L) 2-D padding mask: enough for one response per row
        if strategy.layout == "tree":
            idx = torch.arange(seg.shape[1], device=seg.device)
            allowed = ((idx[:, None] >= idx[None, :])[None]  # causal over the row index, (1, L, L)
                       & (seg[:, None, :] != 3)  # nobody sees padding (pads still see the prompt)
                       & ~((seg[:, :, None] == 2) & (seg[:, None, :] == 1)))  # rejected never sees chosen
            dtype = next(model.parameters()).dtype
            # Additive form: eager attention adds it, SDPA accepts it; no row is fully masked.
            mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
            mask = mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]  # (R, 1, L, L)
        out, hid = _call(body, t["ids"], mask, t["pos"], None, want)  # (R, L, X), (R, L, H) | None
        feats = out.reshape(-1, out.shape[-1])[t["src"]]  # (R·L, X) -> (N, X)
        if not hidden:
            return feats, None
        return feats, (feats if hid is None else hid.reshape(-1, hid.shape[-1])[t["src"]])  # (N, H)
    s = layout.shared()
    cache = DynamicCache(config=model.config)
    out, hid = _call(body, s["prompt_ids"], s["prompt_mask"], s["prompt_pos"], cache, want)  # (B, P, X)
    first = torch.arange(layout.n_pairs, device=out.device)
    pool = out[first, s["prompt_last"]]  # (B, X)
    hpool = hid[first, s["prompt_last"]] if hid is not None else None  # (B, H)
    if s["comp_ids"].shape[1] > 0:
        cache.batch_repeat_interleave(2)  # (B, h, P, d) -> (2B, h, P, d): rows c_0, r_0, c_1, …
        mask = torch.cat([s["prompt_mask"].repeat_interleave(2, dim=0), s["comp_mask"]], dim=1)  # (2B, P+Lc)
        comp, chid = _call(body, s["comp_ids"], mask, s["comp_pos"], cache, want)  # (2B, Lc, X)
        pool = torch.cat([pool, comp.reshape(-1, comp.shape[-1])])  # (B + 2B·Lc, X)
        if hpool is not None and chid is not None:
            hpool = torch.cat([hpool, chid.reshape(-1, chid.shape[-1])])  # (B + 2B·Lc, H)
    feats = pool[s["src"]]  # (N, X)
    if not hidden:
        return feats, None
    return feats, (feats if hpool is None else hpool[s["src"]])  # (N, H)


class FeatureCache:
    """The reference's head inputs per batch, kept between policies within a byte budget.

    Checkpoint-major scoring (`chunked.run_chunks`) scores one policy at a time; token-level DID
    entropy needs the reference's next-token distribution at the same rows for each of them. With
    this cache the reference's body runs once per batch and only its head (a matmul) per policy;
    a batch that does not fit is recomputed. The numbers are the same either way.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.used = max_bytes, 0
        self._rows: dict[tuple, torch.Tensor] = {}
        self.hits = self.misses = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        got = self._rows.get(key)
        self.hits, self.misses = self.hits + (got is not None), self.misses + (got is None)
        return got

    def put(self, key: tuple, rows: torch.Tensor) -> None:
        size = rows.numel() * rows.element_size()
        if key not in self._rows and self.used + size <= self.max_bytes:
            self._rows[key], self.used = rows, self.used + size

    def clear(self) -> None:
        self._rows.clear()
        self.used = 0


class _Scorer:
    """Turns feature rows into logits chunk by chunk (bounded memory), for one model."""

    def __init__(self, model: nn.Module, strategy: Strategy, feats: torch.Tensor) -> None:
        self.head = model.get_output_embeddings() if strategy.head_only else None
        self.feats = feats
        width = self.head.weight.shape[0] if self.head is not None else feats.shape[-1]
        self.chunk = max(1, _CHUNK_ELEMENTS // width)

    def spans(self) -> list[tuple[int, int]]:
        n = self.feats.shape[0]
        return [(s, min(s + self.chunk, n)) for s in range(0, n, self.chunk)]

    def logits(self, s: int, e: int) -> torch.Tensor:
        rows = self.feats[s:e]
        return self.head(rows) if self.head is not None else rows  # (n, V)


def _probe_pairs(vocab: int) -> list[Any]:
    """Two deterministic pairs with unequal prompt and completion lengths (padding and gaps)."""
    def ids(n: int, seed: int) -> tuple[int, ...]:
        return tuple((seed + 7 * i) % min(vocab, 97) for i in range(n))

    @dataclass
    class _P:
        pair_id: str
        prompt_ids: tuple[int, ...]
        chosen_ids: tuple[int, ...]
        rejected_ids: tuple[int, ...]

    return [_P("probe0", ids(3, 5), ids(4, 11), ids(2, 13)), _P("probe1", ids(6, 17), ids(1, 19), ids(5, 23))]


def _strategy(model: nn.Module, device: torch.device) -> Strategy:
    """Pick the fastest path that reproduces a plain full forward of the model (cached per model)."""
    if model in _STRATEGIES:
        return _STRATEGIES[model]
    cfg = model.config
    head = model.get_output_embeddings()
    head_ok = (isinstance(head, nn.Linear) and model.base_model is not model
               and all(getattr(cfg, a, None) in (None, 1, 1.0) for a in _LOGIT_POSTPROCESSING))
    # Sliding windows and chunked attention count cache indices, not positions: no sharing there.
    shared_ok = (not getattr(cfg, "is_encoder_decoder", False) and not getattr(cfg, "sliding_window", None)
                 and not getattr(cfg, "attention_chunk_size", None))
    pairs = _probe_pairs(int(cfg.vocab_size))
    truth = []
    for p in pairs:
        for r in (p.chosen_ids, p.rejected_ids):
            logits = model(input_ids=torch.tensor([list(p.prompt_ids) + list(r)], device=device)).logits[0]
            lp = log_softmax(logits)[len(p.prompt_ids) - 1: -1]  # (T, V)
            truth.append(lp.gather(-1, torch.tensor(r, device=device)[:, None])[:, 0])
    want = torch.cat(truth)  # (N,)
    tol = 1e-3 if next(model.parameters()).dtype in (torch.float32, torch.float64) else 0.5
    layouts: list[Layout] = (["tree", "repeat"] if shared_ok else []) + ["full"]
    candidates = [Strategy(lay, h) for lay in layouts for h in (True, False) if head_ok or not h]
    chosen = Strategy("full", False)
    for cand in candidates:
        try:
            got = _model_logps(model, cand, _Layout(pairs, device))
        except Exception:  # noqa: BLE001 — an unsupported path is simply not taken
            continue
        if torch.allclose(got.double(), want.double(), atol=tol, rtol=0):
            chosen = cand
            break
    _STRATEGIES[model] = chosen
    return chosen


def _model_logps(model: nn.Module, strategy: Strategy, layout: _Layout) -> torch.Tensor:
    sc = _Scorer(model, strategy, _features(model, strategy, layout))
    return torch.cat([token_logprobs(sc.logits(s, e), layout.targets[s:e]) for s, e in sc.spans()]
                     or [torch.zeros(0, device=layout.device)])


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _split(values: torch.Tensor | None, lengths: list[int]) -> list[np.ndarray | None]:
    if values is None:
        return [None] * len(lengths)
    arr = values.detach().float().cpu().numpy()
    return list(np.split(arr, np.cumsum(lengths)[:-1])) if lengths else []


def _pair_scores(logps: torch.Tensor, ents: torch.Tensor | None, lengths: list[int],
                 squeeze: tuple[torch.Tensor, torch.Tensor] | None = None,
                 ches: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[PairScores]:
    """(N,) flat token values of a batch -> one PairScores per pair (responses c_0, r_0, c_1, …).

    squeeze: (N,) top-1 probabilities and (N,) next-token entropies; ches: (B,) CHES and ches_norm."""
    lp, en = _split(logps, lengths), _split(ents, lengths)
    top, ent = (_split(squeeze[0], lengths), _split(squeeze[1], lengths)) if squeeze else ([None] * len(lp),) * 2
    resp = [ResponseScores(a.astype(np.float32), None if h is None else h.astype(np.float32),
                           float(np.sum(a, dtype=np.float64)), t, e) for a, h, t, e in zip(lp, en, top, ent)]
    c, cn = (ches[0].cpu().numpy(), ches[1].cpu().numpy()) if ches else (None, None)
    return [PairScores(resp[2 * i], resp[2 * i + 1], None if c is None else float(c[i]),
                       None if cn is None else float(cn[i])) for i in range(len(resp) // 2)]


def empty_pair(token_level: bool) -> PairScores:
    """Scores of a pair with nothing to score (both responses cut away): empty arrays, sums 0, no CHES."""
    def r() -> ResponseScores:
        return ResponseScores(np.zeros(0, np.float32), np.zeros(0, np.float32) if token_level else None, 0.0,
                              np.zeros(0, np.float32), np.zeros(0, np.float32))
    return PairScores(r(), r(), float("nan"), float("nan"))


def _head_pass(logits: Callable[[int, int], torch.Tensor], spans: list[tuple[int, int]], targets: torch.Tensor,
               ref_logits: Callable[[int, int], torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
    """One model's head, chunk by chunk (never (N, V) at once): (N,) log-probs, ((N,) top-1 probability,
    (N,) entropy), and with `ref_logits` the (N,) token-level DID entropy against the reference."""
    lps, tops, ents, dids = [], [], [], []
    for s, e in spans:
        z = logits(s, e)  # (n, V)
        r = ref_logits(s, e) if ref_logits is not None else None
        for a in range(0, e - s, STATS_ROWS):  # a few rows at a time: their passes stay in the cache
            b = min(a + STATS_ROWS, e - s)
            lp, top, ent = head_stats(z[a:b], targets[s + a:s + b])  # the max and entropy of one softmax
            lps.append(lp)
            tops.append(top)
            ents.append(ent)
            if r is not None:  # the DID needs no log-softmax: raw logit differences give the same q
                dids.append(did_entropy(z[a:b], r[a:b]))
    if not spans:
        z0 = torch.zeros(0, device=targets.device)
        return z0, (z0, z0), (z0 if ref_logits is not None else None)
    return torch.cat(lps), (torch.cat(tops), torch.cat(ents)), (torch.cat(dids) if ref_logits is not None else None)


def score_one_batch(reference: nn.Module, policies: list[nn.Module], batch: list[PairLike], *, token_level: bool,
                    score_reference: bool, device: torch.device, ref_cache: FeatureCache | None = None,
                    ) -> tuple[list[PairScores] | None, list[list[PairScores]]]:
    """Score one batch under every model: reference features once (or from `ref_cache`), then each policy.

    The reference's scores carry CHES, from the head inputs of the forward that scores it."""
    layout = _Layout(batch, device)
    targets, lengths = layout.targets, layout.lengths
    ref: _Scorer | None = None
    ref_hidden = None
    if score_reference or (token_level and policies):
        rs = _strategy(reference, device)
        key = (rs, tuple(p.pair_id for p in batch))
        # Cached rows are head inputs on the bare-head path; on the model's-own-logits path CHES needs
        # the hidden states, which only a fresh forward of the reference's scoring pass returns.
        usable = not (score_reference and not rs.head_only)
        feats = ref_cache.get(key) if ref_cache is not None and usable else None
        if feats is None:
            feats, ref_hidden = _features_and_hidden(reference, rs, layout, hidden=score_reference)
            if ref_cache is not None:
                ref_cache.put(key, feats)
        elif score_reference:
            ref_hidden = feats
        ref = _Scorer(reference, rs, feats)
    n_vocab_bytes = targets.numel() * 4 * (ref.head.weight.shape[0] if ref and ref.head is not None else 0)
    keep = token_level and len(policies) > 1 and n_vocab_bytes <= _REF_CACHE_BYTES
    ref_cache: dict[int, torch.Tensor] = {}

    def ref_logits(s: int, e: int) -> torch.Tensor:  # (e-s, V), computed once when kept
        if s not in ref_cache:
            z = ref.logits(s, e)  # type: ignore[union-attr]
            if not keep:
                return z
            ref_cache[s] = z
        return ref_cache[s]

    ref_out = None
    if score_reference and ref is not None:
        lps, squeeze, _ = _head_pass(ref_logits, ref.spans(), targets)
        ref_out = _pair_scores(lps, None, lengths, squeeze, ches_rows(ref_hidden, lengths))
    pol_out = []
    for policy in policies:
        ps = _strategy(policy, device)
        sc = _Scorer(policy, ps, _features(policy, ps, layout))
        # the same row spans as the reference: same N, same chunk rule
        lps, squeeze, ents = _head_pass(sc.logits, sc.spans(), targets, ref_logits if token_level else None)
        pol_out.append(_pair_scores(lps, ents, lengths, squeeze))
    return ref_out, pol_out


def _check_inputs(pairs: Sequence[PairLike], token_budget: int) -> None:
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    bad = [p.pair_id for p in pairs if not p.prompt_ids and (p.chosen_ids or p.rejected_ids)]
    if bad:
        raise ValueError(f"pairs {bad[:5]} have an empty prompt: nothing predicts their first response token")


def _place(models: Sequence[nn.Module], dev: torch.device, dt: torch.dtype) -> None:
    """Eval mode, on `dev` in `dt` (moved/cast in place only when not there yet)."""
    for m in models:
        p = next(m.parameters())
        if p.device != dev or p.dtype != dt:
            m.to(device=dev, dtype=dt)
        m.eval()


def score_batch_models(reference: nn.Module, policies: list[nn.Module], pairs: Sequence[PairLike], *,
                       token_level: bool, score_reference: bool, token_budget: int,
                       device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32,
                       progress: Callable[[int], None] | None = None, ref_cache: FeatureCache | None = None,
                       ) -> tuple[list[PairScores] | None, list[list[PairScores]]]:
    """Score `pairs` under the reference (when `score_reference`) and every policy.

    Returns (reference scores or None, one list per policy), each aligned with `pairs`. DID entropy
    is filled for policies when `token_level`. The reference is not run at all unless
    `score_reference` is set or `token_level` is on with at least one policy. `token_budget` bounds
    the padded tokens of one forward (see `padded_cost`; on CPU ~512 is fastest, larger budgets only
    add padding and attention); on out-of-memory it is halved and the batch retried. Models are put
    in eval mode and moved/cast to `device`/`dtype` in place when they are not there yet.
    `progress(n)` is called after each batch with the cumulative number of pairs finished.
    Raises ValueError, before any work, for a pair with a response but an empty prompt.
    """
    _check_inputs(pairs, token_budget)
    dev = torch.device(device)
    need_ref = score_reference or (token_level and bool(policies))
    _place(([reference] if need_ref else []) + list(policies), dev, getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    n = len(pairs)
    ref_res: list[PairScores | None] = [None] * n
    pol_res: list[list[PairScores | None]] = [[None] * n for _ in policies]
    for i in [i for i, p in enumerate(pairs) if not (len(p.chosen_ids) or len(p.rejected_ids))]:
        ref_res[i] = empty_pair(False)
        for res in pol_res:
            res[i] = empty_pair(token_level)
    todo = length_order(pairs)
    budget, pos, done = token_budget, 0, n - len(todo)
    with torch.inference_mode():
        used = ([reference] if need_ref else []) + list(policies)
        layouts = sorted({_strategy(m, dev).layout for m in used}) if todo else ["tree"]
        while pos < len(todo):
            end = next_batch_end(pairs, todo, pos, budget, layouts)
            idx = todo[pos:end]
            try:
                r_out, p_out = score_one_batch(reference, list(policies), [pairs[i] for i in idx],
                                            token_level=token_level, score_reference=score_reference, device=dev,
                                            ref_cache=ref_cache)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc) or len(idx) == 1:
                    raise
                budget = max(1, budget // 2)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            for j, i in enumerate(idx):
                if r_out is not None:
                    ref_res[i] = r_out[j]
                for res, out in zip(pol_res, p_out):
                    res[i] = out[j]
            pos, done = end, done + len(idx)
            if progress is not None:
                progress(done)
    return (ref_res if score_reference else None), pol_res  # type: ignore[return-value]
