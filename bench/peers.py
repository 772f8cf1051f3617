"""The two ways people score preference pairs without our engine, written once for every benchmark
(bench/score_bench.py, bench/gpu_check.py):

- `naive_loop`: what one writes by hand: one forward per response per model, full logits,
  log-softmax in float64, gather.
- `head_at_labels`: the batched peer (the approach of the paper author's `logprob-engine`): responses
  sorted by length and batched to a token budget, one row `prompt + response` each (the prompt runs
  twice per pair), the base model's hidden states gathered at the label positions and the output head
  applied only there.

Each returns, per model, one (log π(chosen), log π(rejected)) per pair, summed in float64.
"""

from __future__ import annotations

import torch

Sums = list[list[tuple[float, float]]]


@torch.inference_mode()
def naive_loop(models: list[torch.nn.Module], pairs: list, device: str | torch.device = "cpu") -> Sums:
    out = []
    for m in models:
        rows = []
        for p in pairs:
            sums = []
            for resp in (p.chosen_ids, p.rejected_ids):
                if not resp:
                    sums.append(0.0)
                    continue
                ids = torch.tensor([list(p.prompt_ids) + list(resp)], device=device)
                logits = m(input_ids=ids).logits[0, len(p.prompt_ids) - 1:-1]  # (T, V): rows predicting resp
                logp = torch.log_softmax(logits.double(), dim=-1)
                sums.append(float(logp[torch.arange(len(resp)), torch.tensor(resp, device=device)].sum()))
            rows.append((sums[0], sums[1]))
        out.append(rows)
    return out


@torch.inference_mode()
def head_at_labels(models: list[torch.nn.Module], pairs: list, budget: int = 4096,
                   device: str | torch.device = "cpu") -> Sums:
    seqs = [(i, side, list(p.prompt_ids), list(r)) for i, p in enumerate(pairs)
            for side, r in ((0, p.chosen_ids), (1, p.rejected_ids)) if r]
    seqs.sort(key=lambda s: len(s[2]) + len(s[3]), reverse=True)
    batches, cur = [], []
    for s in seqs:
        width = len(cur[0][2]) + len(cur[0][3]) if cur else len(s[2]) + len(s[3])
        if cur and width * (len(cur) + 1) > budget:
            batches.append(cur)
            cur = []
        cur.append(s)
    if cur:
        batches.append(cur)
    out = []
    for m in models:
        sums = [[0.0, 0.0] for _ in pairs]
        head = m.get_output_embeddings()
        for batch in batches:
            width = max(len(pr) + len(r) for _, _, pr, r in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            rows, cols, labels = [], [], []
            for b, (_, _, pr, r) in enumerate(batch):
                seq = pr + r
                ids[b, :len(seq)] = torch.tensor(seq, device=device)
                mask[b, :len(seq)] = 1
                rows += [b] * len(r)
                cols += list(range(len(pr) - 1, len(seq) - 1))
                labels += r
            hidden = m.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
            h = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]  # (N, H)
            logp = torch.log_softmax(head(h).float(), dim=-1)
            tok = logp.gather(-1, torch.tensor(labels, device=device)[:, None])[:, 0].double().cpu()
            start = 0
            for i, side, _, r in batch:
                sums[i][side] = float(tok[start:start + len(r)].sum())
                start += len(r)
        out.append([(a, b) for a, b in sums])
    return out
