"""The demo's small language: prompts, an enumerable response space, a tokenizer, an SFT reference.

Prompts are 2–3 symbols then `>` (`"cab>"`); a response is 0..L symbols then EOS, written with its
EOS (`"bd>"`, or `">"` for the empty one). With S symbols there are Σ_{m=0..L} S^m responses per
prompt (85 for S = 4, L = 3), so every sequence-level quantity — π(y|x) for all y, the exact DID
entropy — is an exact sum. Writing the EOS keeps the empty response a non-empty string (the data
loader rejects empty completions), and TRL appends no second EOS to a completion ending in one.

The tokenizer is character-level over exactly `>` and the symbols, and `>` is at once the prompt's
end, EOS and the pad token: no token exists that a response may not contain, so the only way a
model can leave the language is to go on after L symbols instead of ending. (A separate pad or
separator token, or a language without the empty response, leaves DPO a way out of the language that
no pair ever pushes back: in trials 20–30% of the mass went there.) (A separate pad or
separator token would be a token DPO can silently move mass to: it did, up to 30% in trials.)
Prompt and completion never merge across their boundary, so TRL's tokenization matches ours token
for token. `response_logprobs` also gives the log-probability of every way out (the L+1-symbol prefixes), and
the exact identity "mass on the language + mass that leaves it = 1" is tested.

The reference the demo trains is a tiny GPT-2 fitted by maximum likelihood to samples of a
prompt-conditional Markov chain (`ground_truth_logprobs`); from then on only the trained model's
own distribution matters.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast


@dataclass(frozen=True)
class Language:
    """The finite world of the demo (deterministic from `seed`)."""

    symbols: str = "abcd"
    eos: str = ">"
    """Ends every prompt and every response; also the pad token."""
    max_len: int = 3
    """Longest response in symbols (EOS not counted); the empty response (EOS alone) is one too."""
    n_prompts: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols) or len(self.symbols) < 2 or self.eos in self.symbols:
            raise ValueError(f"need >= 2 distinct symbols not containing the EOS character, got {self.symbols!r}")
        if not 1 <= self.max_len <= 5:
            raise ValueError(f"max_len must be in 1..5, got {self.max_len}")
        n_all = len(self.symbols) ** 2 + len(self.symbols) ** 3
        if not 1 <= self.n_prompts <= n_all:
            raise ValueError(f"n_prompts must be in 1..{n_all}, got {self.n_prompts}")

    def prompts(self) -> list[str]:
        """`n_prompts` distinct prompts of 2–3 symbols + EOS, a seeded choice, half of each length."""
        g = torch.Generator().manual_seed(self.seed)
        two = ["".join(p) for p in itertools.product(self.symbols, repeat=2)]
        three = ["".join(p) for p in itertools.product(self.symbols, repeat=3)]
        n2 = min(len(two), self.n_prompts // 2)
        pick2 = [two[i] for i in torch.randperm(len(two), generator=g)[:n2].tolist()]
        pick3 = [three[i] for i in torch.randperm(len(three), generator=g)[:self.n_prompts - n2].tolist()]
        return [p + self.eos for p in pick2 + pick3]

    def responses(self) -> list[str]:
        """Every response (without EOS), shortest first, then lexicographic: (R,) strings."""
        return ["".join(p) for m in range(self.max_len + 1) for p in itertools.product(self.symbols, repeat=m)]

    def completion(self, response: str) -> str:
        """A response as written in the data: its symbols and the EOS character."""
        return response + self.eos


def build_language_tokenizer(lang: Language) -> PreTrainedTokenizerFast:
    """Character-level: id 0 is `>` (EOS and pad), 1.. the symbols. No BOS, no chat template."""
    vocab = {lang.eos: 0} | {s: 1 + i for i, s in enumerate(lang.symbols)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=False))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=lang.eos, pad_token=lang.eos, bos_token=None,
                                   unk_token=None)


def reference_model_config(vocab_size: int, n_positions: int = 16) -> GPT2Config:
    """A tiny GPT-2 (2 layers, 48 dims, no dropout): big enough to fit the Markov chain, fast on CPU."""
    return GPT2Config(vocab_size=vocab_size, n_layer=2, n_embd=48, n_head=2, n_positions=n_positions,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0)


def ground_truth_logprobs(lang: Language) -> torch.Tensor:
    """The SFT data's distribution: log π₀(y|x), (n_prompts, R) float64, rows normalised.

    A Markov chain: the first symbol (or EOS: the empty response) depends on the prompt's first and
    last symbols, each next symbol (or EOS) on the previous one, EOS becoming likelier with length
    and forced after L symbols.
    """
    g = torch.Generator().manual_seed(10_000 + lang.seed)
    s = len(lang.symbols)
    first = 1.5 * torch.randn(s, s, s + 1, generator=g, dtype=torch.float64)      # (x_first, x_last, y_1 or EOS)
    trans = 1.5 * torch.randn(s, s + 1, generator=g, dtype=torch.float64)         # (prev, next or EOS)
    eos_bias = torch.tensor([-2.0, -0.5, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # by symbols so far
    index = {c: i for i, c in enumerate(lang.symbols)}
    rows = []
    for prompt in lang.prompts():
        x0, x1 = index[prompt[0]], index[prompt[-2]]
        out = []
        for resp in lang.responses():
            ids = [index[c] for c in resp]
            lp = 0.0
            for t in range(len(ids) + 1):  # after t symbols: the next symbol, or EOS (forced at L)
                if t == lang.max_len:
                    break
                logits = (first[x0, x1] if t == 0 else trans[ids[t - 1]]).clone()
                logits[s] += eos_bias[t]
                lp += float(torch.log_softmax(logits, 0)[ids[t] if t < len(ids) else s])
            out.append(lp)
        rows.append(out)
    return torch.log_softmax(torch.tensor(rows, dtype=torch.float64), dim=-1)  # renormalise exactly


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def train_reference(lang: Language, tokenizer: PreTrainedTokenizerFast, log_probs: torch.Tensor, *,
                    n_samples: int = 4096, steps: int = 300, batch_size: int = 128, lr: float = 3e-3,
                    seed: int = 0, progress=None) -> GPT2LMHeadModel:
    """SFT: fit a tiny GPT-2 to `n_samples` draws of (x, y ~ exp(log_probs[x])); loss on response tokens.

    log_probs: (n_prompts, R). Deterministic from `seed` (CPU, fixed batch order).
    """
    g = torch.Generator().manual_seed(20_000 + seed)
    prompts, responses = lang.prompts(), lang.responses()
    xi = torch.randint(len(prompts), (n_samples,), generator=g)
    yi = torch.multinomial(log_probs.exp()[xi], 1, generator=g).squeeze(1)
    eos = tokenizer.eos_token_id
    seqs = [(encode(tokenizer, prompts[a]), encode(tokenizer, lang.completion(responses[b]))) for a, b in
            zip(xi.tolist(), yi.tolist())]
    t_max = max(len(p) + len(r) for p, r in seqs)
    ids = torch.full((n_samples, t_max), eos, dtype=torch.long)                # (n, T), right-padded
    attn = torch.zeros(n_samples, t_max, dtype=torch.long)
    labels = torch.full((n_samples, t_max), -100, dtype=torch.long)           # response tokens only
    for i, (p, r) in enumerate(seqs):
        ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        attn[i, :len(p) + len(r)] = 1
        labels[i, len(p):len(p) + len(r)] = torch.tensor(r)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(reference_model_config(len(tokenizer), n_positions=max(16, t_max)))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 20) * max(0.1, 1 - k / steps))
    for step in range(steps):
        idx = torch.randint(n_samples, (batch_size,), generator=g)
        logits = model(input_ids=ids[idx], attention_mask=attn[idx]).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[idx][:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and (step % 25 == 0 or step == steps - 1):
            progress(step + 1, steps)
    return model.eval()


@dataclass(frozen=True)
class ResponseLogprobs:
    """Exact log π(y|x) of one model over the whole language, and over what lies just beyond it."""

    logp: torch.Tensor
    """(n_prompts, R) float64: log π(y + EOS | x) for every response y (`Language.responses()` order)."""
    cut_logp: torch.Tensor
    """(n_prompts, S^(L+1)) float64: log π of each L+1-symbol prefix — every way to leave the language
    (go on after L symbols). With `logp` it is the whole support of a sampler cut after L+1 tokens
    (`did_core.sampling.enumerate_responses`), so the two sum to exactly 1 per prompt."""

    @property
    def language_mass(self) -> torch.Tensor:
        """(n_prompts,) Σ_y π(y|x) over the language (≤ 1)."""
        return self.logp.exp().sum(-1)

    @property
    def exit_mass(self) -> torch.Tensor:
        """(n_prompts,) mass that leaves the language; language_mass + exit_mass = 1."""
        return self.cut_logp.exp().sum(-1)

    def support_logp(self) -> torch.Tensor:
        """(n_prompts, R + S^(L+1)): the language then the cut sequences — the sampler's whole support."""
        return torch.cat([self.logp, self.cut_logp], dim=-1)


@torch.no_grad()
def response_logprobs(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, lang: Language) -> ResponseLogprobs:
    """Every response's exact log-probability, from one forward per prompt over the S^L full-length
    symbol strings (every response prefix is a prefix of one of them)."""
    s, length = len(lang.symbols), lang.max_len
    sym_ids = torch.tensor(encode(tokenizer, lang.symbols))                    # (S,)
    eos = tokenizer.eos_token_id
    full = torch.tensor(list(itertools.product(range(s), repeat=length)))      # (S^L, L) symbol indices
    # Response y = (i_1..i_m): the row of `full` whose prefix is y (padded with symbol 0).
    rows, lens = [], []
    for m in range(length + 1):
        for p in itertools.product(range(s), repeat=m):
            rows.append(sum(c * s ** (length - 1 - k) for k, c in enumerate(p)))
            lens.append(m)
    rows_t, lens_t = torch.tensor(rows), torch.tensor(lens)                    # (R,), (R,)
    logps, cuts = [], []
    for prompt in lang.prompts():
        p_ids = torch.tensor(encode(tokenizer, prompt))
        n = full.shape[0]
        ids = torch.cat([p_ids.expand(n, -1), sym_ids[full]], dim=1)          # (S^L, P+L)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        lp = torch.log_softmax(logits[:, len(p_ids) - 1:, :].double(), -1)     # (S^L, L+1, V): next after k symbols
        tok = lp[:, :length, :].gather(-1, sym_ids[full][..., None]).squeeze(-1)  # (S^L, L) log p(i_k | prefix)
        prefix = torch.cat([torch.zeros(n, 1, dtype=torch.float64), tok.cumsum(1)], 1)  # (S^L, L+1) log π(prefix)
        logps.append(prefix[rows_t, lens_t] + lp[rows_t, lens_t, eos])          # (R,)
        cuts.append((prefix[:, length, None] + lp[:, length][:, sym_ids]).reshape(-1))  # (S^L·S,) in product order
    return ResponseLogprobs(torch.stack(logps), torch.stack(cuts))


def entropy_rows(log_p: torch.Tensor) -> torch.Tensor:
    """Row entropies of (n, R) log-probabilities after renormalising each row: (n,) nats."""
    lq = torch.log_softmax(log_p, -1)
    return -(lq.exp() * lq).sum(-1)


def max_entropy(lang: Language) -> float:
    """log R: the entropy of a uniform distribution over the responses."""
    return math.log(len(lang.responses()))
