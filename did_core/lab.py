"""The exact lab: the paper's energy-based experiments on a finite support, computed exactly.

A finite support Y (N flat items, or every sequence of ≤ L symbols over V, each followed by EOS);
`π_ref ∝ exp(−E_ref)` from random energies; a target DID `q* ∝ exp(−E*/T)` whose entropy the
temperature T sets; the target `π* ∝ π_ref·q*` (so the DID of π* relative to π_ref is q*);
preference pairs `y_w ~ π_ref`, `y_l ~ π_l` with the DID-encoding `π_l ∝ π_ref^{1+β} π*^{−β}`
(or uniform / π_ref, for contrast); a tabular policy `π = softmax(θ)`, θ initialised at
log π_ref, trained full-batch on the sampled pairs with DPO, SimPO or IPO. Every metric is exact
(sums over the whole support), recorded at every step.

Pure torch, no I/O. Sizes: N (support), P (sampled pairs), U (distinct ordered pairs), S (steps).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from did_core.run_settings import DEFAULT_BETA

Support = Literal["flat", "sequences"]
Rejected = Literal["did", "uniform", "reference"]
Loss = Literal["dpo", "simpo", "ipo"]
Optimizer = Literal["adam", "sgd"]


@dataclass(frozen=True)
class LabConfig:
    """One lab experiment. Defaults update in ~0.1 s on one CPU thread (the dashboard's sliders)."""

    support: Support = "flat"
    """`flat`: N unstructured items; `sequences`: every sequence of ≤ max_len symbols + EOS."""
    n_items: int = 32
    """N for the flat support."""
    vocab: int = 3
    """Symbols for the sequence support."""
    max_len: int = 3
    """Longest sequence (symbols, EOS not counted); the empty sequence is included."""
    ref_scale: float = 1.0
    """Std of the reference energies: larger makes π_ref more peaked."""
    target_temperature: float = 1.0
    """T in q* ∝ exp(−E*/T): low T gives a low-entropy target DID. Ignored if target_entropy is set."""
    target_entropy: float | None = None
    """Target DID entropy as a fraction of log N, in (0, 1); T is solved for by bisection."""
    target_alignment: float = 0.0
    """a ∈ [−1, 1]: E* = −a·z(log π_ref) + √(1−a²)·ε. a > 0: q* favours what π_ref already likes."""
    beta: float = DEFAULT_BETA
    """β of the power law that generates the data, and of the training loss (TRL's default, as in the paper)."""
    n_pairs: int = 262_144
    """Sampled pairs. Cheap: a step costs O(distinct pairs) ≤ O(N²). Small β needs many pairs, since
    DPO reads log-ratios off preference frequencies σ(β·Δ) and sampling noise is scaled by 1/β."""
    rejected: Rejected = "did"
    """π_l: `did` ∝ π_ref^{1+β} π*^{−β} (encodes q*), `uniform`, or `reference` (π_l = π_ref)."""
    loss: Loss = "dpo"
    simpo_gamma: float = 0.5
    """SimPO's target margin γ (its β is `beta`)."""
    optimizer: Optimizer = "adam"
    lr: float = 0.2
    steps: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        if self.support not in ("flat", "sequences"):
            raise ValueError(f"support must be flat|sequences, got {self.support!r}")
        if self.support == "flat" and self.n_items < 2:
            raise ValueError(f"n_items must be >= 2, got {self.n_items}")
        if self.support == "sequences" and (self.vocab < 1 or self.max_len < 1 or self.vocab**self.max_len > 200_000):
            raise ValueError(f"need vocab >= 1, max_len >= 1 and vocab**max_len <= 200000, got {self.vocab}, {self.max_len}")
        if not (self.ref_scale >= 0 and self.target_temperature > 0 and self.beta > 0 and self.lr > 0):
            raise ValueError("ref_scale must be >= 0; target_temperature, beta and lr must be > 0")
        if self.target_entropy is not None and not (0 < self.target_entropy < 1):
            raise ValueError(f"target_entropy is a fraction of log N in (0, 1), got {self.target_entropy}")
        if not (-1 <= self.target_alignment <= 1):
            raise ValueError(f"target_alignment must be in [-1, 1], got {self.target_alignment}")
        if self.n_pairs < 1 or self.steps < 0:
            raise ValueError(f"n_pairs must be >= 1 and steps >= 0, got {self.n_pairs}, {self.steps}")
        if self.rejected not in ("did", "uniform", "reference"):
            raise ValueError(f"rejected must be did|uniform|reference, got {self.rejected!r}")
        if self.loss not in ("dpo", "simpo", "ipo"):
            raise ValueError(f"loss must be dpo|simpo|ipo, got {self.loss!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam|sgd, got {self.optimizer!r}")


@dataclass(frozen=True)
class World:
    """The exact distributions of one experiment, all as log-probabilities of shape (N,)."""

    log_ref: torch.Tensor
    log_target_did: torch.Tensor
    """log q*."""
    log_target: torch.Tensor
    """log π* = log_softmax(log π_ref + log q*)."""
    log_rejected: torch.Tensor
    """log π_l, the distribution rejected responses are drawn from."""
    lengths: torch.Tensor
    """(N,) tokens per response (symbols + EOS; 1 for flat items), for SimPO's length normalisation."""
    items: list[tuple[int, ...]] = field(default_factory=list)
    """The sequences of the sequence support (empty for flat)."""
    beta: float = 1.0
    temperature: float = 1.0


@dataclass(frozen=True)
class LabResult:
    """A trained lab run: the world, the sampled pairs, the trajectory and its exact metrics."""

    world: World
    chosen: torch.Tensor
    """(P,) item index of y_w for each sampled pair."""
    rejected: torch.Tensor
    """(P,) item index of y_l."""
    log_policy: torch.Tensor
    """(S+1, N) log π at every step (row 0 is π_ref)."""
    history: dict[str, torch.Tensor]
    """Metric name -> (S+1,) float64; see `trajectory_metrics`."""

    def table(self) -> dict[str, list[float]]:
        """The history as plain lists, with a `step` column (ready for a DataFrame)."""
        steps = list(range(self.log_policy.shape[0]))
        return {"step": [float(s) for s in steps]} | {k: v.tolist() for k, v in self.history.items()}


# ---------------------------------------------------------------- distributions


def enumerate_sequences(vocab: int, max_len: int) -> list[tuple[int, ...]]:
    """Every sequence of 0..max_len symbols over range(vocab), shortest first: Σ_l V^l items."""
    return [seq for n in range(max_len + 1) for seq in itertools.product(range(vocab), repeat=n)]


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last dim. (..., N) -> (...). 0·log 0 counts as 0."""
    p = log_p.exp()
    return -(p * torch.where(p > 0, log_p, torch.zeros_like(log_p))).sum(-1)


def did(log_policy: torch.Tensor, log_ref: torch.Tensor) -> torch.Tensor:
    """log q_{π/π_ref} = log_softmax(log π − log π_ref). (..., N) -> (..., N)."""
    return torch.log_softmax(log_policy - log_ref, dim=-1)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim. (..., N) -> (...)."""
    p = log_p.exp()
    return (p * (log_p - log_q)).where(p > 0, torch.zeros_like(p)).sum(-1)


def js(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in nats, in [0, log 2]. (..., N) -> (...)."""
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    return 0.5 * kl(log_p, log_m) + 0.5 * kl(log_q, log_m)


def temperature_for_entropy(energies: torch.Tensor, target: float, iters: int = 80) -> float:
    """T such that H(softmax(−E/T)) = target nats, by bisection on log T (H rises with T).

    energies: (N,), not all equal; target in (0, log N).
    """
    lo, hi = math.log(1e-4), math.log(1e4)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        h = float(entropy(torch.log_softmax(-energies / math.exp(mid), dim=-1)))
        lo, hi = (mid, hi) if h < target else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def make_world(cfg: LabConfig) -> World:
    """Draw π_ref and q* from `cfg.seed` and derive π* and π_l (exact, (N,) each)."""
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.support == "flat":
        items: list[tuple[int, ...]] = []
        lengths = torch.ones(cfg.n_items, dtype=torch.float64)
    else:
        items = enumerate_sequences(cfg.vocab, cfg.max_len)
        lengths = torch.tensor([len(s) + 1 for s in items], dtype=torch.float64)
    n = lengths.shape[0]
    log_ref = torch.log_softmax(cfg.ref_scale * torch.randn(n, generator=g, dtype=torch.float64), dim=-1)
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    z_ref = (log_ref - log_ref.mean()) / log_ref.std().clamp_min(1e-12)
    a = cfg.target_alignment
    energies = -a * z_ref + math.sqrt(max(0.0, 1 - a * a)) * noise  # (N,) ~ unit variance
    temp = (cfg.target_temperature if cfg.target_entropy is None
            else temperature_for_entropy(energies, cfg.target_entropy * math.log(n)))
    log_q = torch.log_softmax(-energies / temp, dim=-1)
    log_target = torch.log_softmax(log_ref + log_q, dim=-1)
    return World(log_ref=log_ref, log_target_did=log_q, log_target=log_target,
                 log_rejected=rejected_distribution(cfg.rejected, log_ref, log_target, cfg.beta),
                 lengths=lengths, items=items, beta=cfg.beta, temperature=temp)


def rejected_distribution(kind: Rejected, log_ref: torch.Tensor, log_target: torch.Tensor,
                          beta: float) -> torch.Tensor:
    """log π_l (N,). `did`: π_l ∝ π_ref^{1+β} π*^{−β}, so that q_{π_ref/π_l} ∝ (q*)^β (power law)."""
    if kind == "did":
        return torch.log_softmax((1 + beta) * log_ref - beta * log_target, dim=-1)
    if kind == "uniform":
        return torch.full_like(log_ref, -math.log(log_ref.shape[0]))
    return log_ref.clone()


def preference_probability(world: World, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's p*(a ≻ b) = σ(β log q*(a) − β log q*(b)). a, b: (...,) item indices -> (...)."""
    q = world.log_target_did
    return torch.sigmoid(world.beta * (q[a] - q[b]))


def sample_pairs(world: World, n_pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_w, y_l) item indices, each (P,): y_w ~ π_ref, y_l ~ π_l, independent, from `seed`."""
    g = torch.Generator().manual_seed(seed + 1)  # +1: not the stream that drew the world
    chosen = torch.multinomial(world.log_ref.exp(), n_pairs, replacement=True, generator=g)
    rejected = torch.multinomial(world.log_rejected.exp(), n_pairs, replacement=True, generator=g)
    return chosen, rejected


# ---------------------------------------------------------------- losses and training


def pair_losses(kind: Loss, logp_w: torch.Tensor, logp_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor,
                len_w: torch.Tensor, len_l: torch.Tensor, beta: float, gamma: float = 0.5) -> torch.Tensor:
    """Per-pair loss, all inputs (U,) -> (U,). As in TRL:

    dpo:   −log σ(β[(ℓ_w − ℓ^ref_w) − (ℓ_l − ℓ^ref_l)])
    ipo:   ([(ℓ_w − ℓ^ref_w) − (ℓ_l − ℓ^ref_l)] − 1/(2β))²
    simpo: −log σ(β[ℓ_w/|y_w| − ℓ_l/|y_l|] − γ)        (no reference)

    The torch twins (autograd trains the lab) of `did_core.losses.preference_loss` with sequence sums
    (dpo, ipo) and per-token means (simpo); tests/test_lab.py checks that they stay equal.
    """
    if kind == "simpo":
        return -F.logsigmoid(beta * (logp_w / len_w - logp_l / len_l) - gamma)
    h = (logp_w - ref_w) - (logp_l - ref_l)
    if kind == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return -F.logsigmoid(beta * h)


def train(world: World, chosen: torch.Tensor, rejected: torch.Tensor, cfg: LabConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch training of π = softmax(θ), θ₀ = log π_ref. Returns (log π (S+1, N), loss (S+1,)).

    The P pairs are collapsed to U distinct ordered pairs with weights count/P, so a step costs
    O(N + U), not O(P). Deterministic: no sampling inside, fixed reduction order.
    """
    n = world.log_ref.shape[0]
    keys, counts = torch.unique(chosen * n + rejected, return_counts=True)  # (U,)
    w, lo = keys // n, keys % n
    weights = counts.double() / chosen.shape[0]
    ref_w, ref_l = world.log_ref[w], world.log_ref[lo]
    len_w, len_l = world.lengths[w], world.lengths[lo]
    theta = world.log_ref.clone().requires_grad_(True)
    opt = (torch.optim.Adam([theta], lr=cfg.lr) if cfg.optimizer == "adam"
           else torch.optim.SGD([theta], lr=cfg.lr))
    traj = torch.empty(cfg.steps + 1, n, dtype=torch.float64)
    losses = torch.empty(cfg.steps + 1, dtype=torch.float64)
    for step in range(cfg.steps + 1):
        logp = torch.log_softmax(theta, dim=-1)
        loss = (weights * pair_losses(cfg.loss, logp[w], logp[lo], ref_w, ref_l, len_w, len_l,
                                      cfg.beta, cfg.simpo_gamma)).sum()
        traj[step] = logp.detach()
        losses[step] = loss.detach()
        if step == cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return traj, losses


def trajectory_metrics(world: World, log_policy: torch.Tensor, chosen: torch.Tensor,
                       rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact metrics of every row of log_policy (S+1, N); each value is (S+1,) float64.

    js_target: JS(π, π*);  kl_policy_target: KL(π‖π*);  kl_target_policy: KL(π*‖π);
    logp_chosen / logp_rejected: mean over the P pairs of log π(y_w) / log π(y_l);
    policy_entropy: H(π);  did_entropy: H(q_{π/π_ref});  unseen_mass: π-mass on items in no pair.
    """
    n = log_policy.shape[1]
    target = world.log_target.expand_as(log_policy)
    # Mean over pairs as counts @ log π: (S+1, N) @ (N,), not a (S+1, P) gather.
    chosen_freq = torch.bincount(chosen, minlength=n).double() / chosen.shape[0]
    rejected_freq = torch.bincount(rejected, minlength=n).double() / rejected.shape[0]
    seen = (chosen_freq > 0) | (rejected_freq > 0)
    return {
        "js_target": js(log_policy, target),
        "kl_policy_target": kl(log_policy, target),
        "kl_target_policy": kl(target, log_policy),
        "logp_chosen": log_policy @ chosen_freq,
        "logp_rejected": log_policy @ rejected_freq,
        "policy_entropy": entropy(log_policy),
        "did_entropy": entropy(did(log_policy, world.log_ref.expand_as(log_policy))),
        "unseen_mass": log_policy[:, ~seen].exp().sum(-1),
    }


def run_lab(cfg: LabConfig = LabConfig()) -> LabResult:
    """Draw the world and the pairs, train, and compute every metric at every step."""
    world = make_world(cfg)
    chosen, rejected = sample_pairs(world, cfg.n_pairs, cfg.seed)
    traj, losses = train(world, chosen, rejected, cfg)
    history = trajectory_metrics(world, traj, chosen, rejected) | {"loss": losses}
    return LabResult(world=world, chosen=chosen, rejected=rejected, log_policy=traj, history=history)


def target_summary(world: World) -> dict[str, float]:
    """What π* would do, exactly (the population optimum of DPO on DID-encoding data).

    chosen_logp_shift = E_{π_ref}[log π* − log π_ref] = −KL(π_ref‖π*) ≤ 0: chosen responses drawn
    from π_ref lose log-likelihood on average whenever π* ≠ π_ref.
    """
    return {
        "target_did_entropy": float(entropy(world.log_target_did)),
        "target_did_entropy_frac": float(entropy(world.log_target_did)) / math.log(world.log_ref.shape[0]),
        "ref_entropy": float(entropy(world.log_ref)),
        "target_entropy": float(entropy(world.log_target)),
        "chosen_logp_shift": -float(kl(world.log_ref, world.log_target)),
        "rejected_logp_shift": float((world.log_rejected.exp() * (world.log_target - world.log_ref)).sum()),
    }
