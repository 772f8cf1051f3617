"""Sample K responses per prompt from a proposal model and score them under a policy and a reference.

Feeds the sequence-level DID entropy estimators of `did_core.entropy` (docs/REFERENCE.md §3, estimator 2).
The sampler is a plain ancestral loop with a KV cache rather than `model.generate`, because
`generate` silently applies whatever the checkpoint's `generation_config.json` says (top-k 50,
repetition penalty, ...), and importance sampling needs the *exact* distribution that produced each
sample. Temperature 1 and no truncation unless asked; the sampler returns the log-prob of each
sample under the distribution it actually sampled from (after temperature/top-k/top-p).

Support: a response ends at the first EOS (included) or is cut after `max_new_tokens` tokens.
With temperature 1 and no truncation these sequences, with the model's probabilities, form a
normalized distribution — the world the exact enumeration in the tests covers.

Tensors are created on the model's own device; models are never moved. Scoring here is a simple
batched forward per model; `scorer` lets the caller substitute the engine
(`did_core.engine.score_batch_models`) once it is wired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

Responses = list[tuple[int, ...]]
Scorer = Callable[[torch.nn.Module, Sequence[int], Responses], np.ndarray]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def sampler_log_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None) -> torch.Tensor:
    """Log-probs of the distribution actually sampled from: (n, V) logits -> (n, V) float32 log-probs.

    Temperature divides the logits; top-k keeps the k largest; top-p keeps the smallest set of most
    likely tokens whose mass reaches p (at least one). Removed tokens get −inf.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = logits.float() / temperature
    if top_k is not None and 0 < top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]           # (n, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        cum = torch.softmax(sorted_x, -1).cumsum(-1)
        drop_sorted = (cum - torch.softmax(sorted_x, -1)) >= top_p     # mass before this token already ≥ p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return torch.log_softmax(x, dim=-1)


@torch.no_grad()
def sample_responses(model: torch.nn.Module, prompt_ids: Sequence[int], k: int, *, max_new_tokens: int,
                     eos_token_id: int, seed: int = 0, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, batch_size: int = 64) -> tuple[Responses, np.ndarray]:
    """K ancestral samples for one prompt: (responses, log_proposal (K,) float64).

    Each response is a tuple of token ids, EOS included when emitted. Deterministic given
    (seed, batch_size) on a given device.
    """
    if k < 1 or max_new_tokens < 1 or len(prompt_ids) == 0:
        raise ValueError("need k >= 1, max_new_tokens >= 1 and a non-empty prompt")
    dev = _device(model)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    prompt = torch.tensor(list(prompt_ids), dtype=torch.long, device=dev)
    responses: Responses = []
    log_props: list[np.ndarray] = []
    for start in range(0, k, batch_size):
        n = min(batch_size, k - start)
        # an all-ones mask: EOS/pad ids may legitimately occur inside prompts and samples
        mask = torch.ones(n, len(prompt_ids) + max_new_tokens, dtype=torch.long, device=dev)
        out = model(input_ids=prompt.unsqueeze(0).expand(n, -1), attention_mask=mask[:, :len(prompt_ids)],
                    use_cache=True, logits_to_keep=1)
        cache, logits = out.cache, out.logits[:, -1, :]                             # (n, V)
        tokens = torch.full((n, max_new_tokens), eos_token_id, dtype=torch.long, device=dev)
        logp = torch.zeros(n, dtype=torch.float64, device=dev)
        lengths = torch.full((n,), max_new_tokens, dtype=torch.long, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        for t in range(max_new_tokens):
            lp = sampler_log_probs(logits, temperature, top_k, top_p)              # (n, V)
            nxt = torch.multinomial(lp.exp(), 1, generator=gen).squeeze(1)         # (n,)
            nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
            logp += torch.where(done, 0.0, lp.gather(1, nxt[:, None]).squeeze(1).double())
            tokens[:, t] = nxt
            ended = ~done & (nxt == eos_token_id)
            lengths[ended] = t + 1
            done |= ended
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            out = model(input_ids=nxt[:, None], attention_mask=mask[:, :len(prompt_ids) + t + 1], cache=cache,
                        use_cache=True, logits_to_keep=1)
            cache, logits = out.cache, out.logits[:, -1, :]
        tok, ln = tokens.cpu().tolist(), lengths.cpu().tolist()
        responses.extend(tuple(row[:m]) for row, m in zip(tok, ln))
        log_props.append(logp.cpu().numpy())
    return responses, np.concatenate(log_props)


@torch.no_grad()
def score_responses(model: torch.nn.Module, prompt_ids: Sequence[int], responses: Responses,
                    batch_size: int = 64) -> np.ndarray:
    """ℓ(y|x) = Σ_t log p(y_t | x, y_<t) for each response: (K,) float64 (0 for an empty response).

    Right-padded batched forward; a causal model's real positions do not see the padding.
    """
    dev = _device(model)
    p = len(prompt_ids)
    out = np.zeros(len(responses), dtype=np.float64)
    for start in range(0, len(responses), batch_size):
        chunk = responses[start:start + batch_size]
        t_max = max(len(r) for r in chunk)
        if t_max == 0:
            continue
        ids = torch.zeros(len(chunk), p + t_max, dtype=torch.long, device=dev)    # (n, P+T)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(chunk):
            ids[i, :p + len(r)] = torch.tensor(list(prompt_ids) + list(r), device=dev)
            mask[i, :p + len(r)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, p - 1:-1, :]   # (n, T, V) predicts y_t
        lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, p:, None]).squeeze(-1)  # (n, T)
        resp_mask = mask[:, p:].bool()
        out[start:start + len(chunk)] = (lp.double() * resp_mask).sum(-1).cpu().numpy()
    return out


def sample_did_entropy(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer, prompts_ids: Sequence[
        Sequence[int]], K: int, seed: int = 0, *, proposal: str | torch.nn.Module = "policy",
        max_new_tokens: int = 64, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
        batch_size: int = 64, eos_token_id: int | None = None, scorer: Scorer | None = None) -> pd.DataFrame:
    """Sample K responses per prompt from the proposal and score them under policy and reference.

    proposal: "policy" (default), "reference", or another model sharing the tokenizer.
    Prompt i is sampled with seed `seed * 1_000_003 + i`. Returns one row per sample:
    `prompt_index, sample_index` (int), `response_ids` (tuple[int]), `n_tokens` (int), `finished`
    (bool: ended with EOS), `logp_proposal` (log-prob under the sampler's actual distribution),
    `logp_policy`, `logp_reference`, `log_ratio` (d = logp_policy − logp_reference), all float64, and
    `response` (decoded text, "" without a tokenizer). Feed it to `did_core.entropy.summarize_samples`.
    """
    eos = eos_token_id if eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("no EOS id: pass eos_token_id or a tokenizer with one")
    proposal_model = {"policy": policy, "reference": reference}.get(proposal, proposal) \
        if isinstance(proposal, str) else proposal
    if isinstance(proposal_model, str):
        raise ValueError(f"proposal must be 'policy', 'reference' or a model, got {proposal!r}")
    score = scorer or (lambda m, p, r: score_responses(m, p, r, batch_size))
    frames = []
    for i, prompt in enumerate(prompts_ids):
        responses, log_prop = sample_responses(
            proposal_model, prompt, K, max_new_tokens=max_new_tokens, eos_token_id=eos, seed=seed * 1_000_003 + i,
            temperature=temperature, top_k=top_k, top_p=top_p, batch_size=batch_size)
        lp_pol = np.asarray(score(policy, prompt, responses), dtype=np.float64)
        lp_ref = np.asarray(score(reference, prompt, responses), dtype=np.float64)
        frames.append(pd.DataFrame({
            "prompt_index": i, "sample_index": np.arange(K), "response_ids": responses,
            "n_tokens": [len(r) for r in responses], "finished": [len(r) > 0 and r[-1] == eos for r in responses],
            "logp_proposal": log_prop, "logp_policy": lp_pol, "logp_reference": lp_ref,
            "log_ratio": lp_pol - lp_ref,
            "response": [tokenizer.decode(list(r)) if tokenizer is not None else "" for r in responses],
        }))
    return pd.concat(frames, ignore_index=True)


def enumerate_responses(vocab_size: int, eos_token_id: int, max_new_tokens: int) -> Responses:
    """Every response the sampler can emit in a finite world: the sampler's exact support.

    Sequences of non-EOS tokens of length m < max_new_tokens followed by EOS, plus every EOS-free
    sequence of exactly max_new_tokens tokens (cut). Count: Σ_{m<L} s^m + s^L with s = vocab_size − 1.
    """
    symbols = [v for v in range(vocab_size) if v != eos_token_id]
    out: Responses = []
    prefixes: Responses = [()]
    for _ in range(max_new_tokens):
        out.extend(p + (eos_token_id,) for p in prefixes)
        prefixes = [p + (s,) for p in prefixes for s in symbols]
    return out + prefixes


def engine_scorer(token_budget: int = 8192, device: str | torch.device = "cpu",
                  dtype: str | torch.dtype = torch.float32) -> Scorer:
    """A `scorer` for `sample_did_entropy` backed by `did_core.engine.score_batch_models`.

    Samples are packed two to a pseudo-pair (chosen = sample 2j, rejected = sample 2j+1) so the
    engine's shared-prompt path scores the prompt once per pair. Note the engine casts/moves the
    model to `device`/`dtype` in place when it is not there yet.
    """
    from types import SimpleNamespace

    from did_core.engine import score_batch_models

    def score(model: torch.nn.Module, prompt_ids: Sequence[int], responses: Responses) -> np.ndarray:
        padded = list(responses) + ([()] if len(responses) % 2 else [])
        pairs = [SimpleNamespace(pair_id=str(j), prompt_ids=tuple(prompt_ids), chosen_ids=padded[2 * j],
                                 rejected_ids=padded[2 * j + 1]) for j in range(len(padded) // 2)]
        _, (scores,) = score_batch_models(model, [model], pairs, token_level=False, score_reference=False,
                                          token_budget=token_budget, device=device, dtype=dtype)
        flat = [s for ps in scores for s in (ps.chosen.logp_sum, ps.rejected.logp_sum)]
        return np.asarray(flat[:len(responses)], dtype=np.float64)

    return score
