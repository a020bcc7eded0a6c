"""Exercises of lesson A1 (pre-training the pocket LLM)."""

from __future__ import annotations

import numpy as np

from labkit.grading.exercise import Case, Exercise, case, close

IGNORE = -100  # a position without a target (padding), or without a second answer


# ----- reference solutions -----
def soft_target_loss(log_probs: np.ndarray, targets: np.ndarray, alt: np.ndarray, alt_share: np.ndarray,
                     weights: np.ndarray) -> float:
    """Reference: the pocket LLM's pre-training loss (labkit.pocket.pretrain.weighted_loss). Per
    position j, the cross-entropy against a soft target: (1 - s_j) of the mass on targets[j] and s_j
    on alt[j] (no second answer where alt is IGNORE); then the mean weighted by weights, over the
    positions with a weight."""
    logp = np.asarray(log_probs, dtype=np.float64)
    t, a = np.asarray(targets), np.asarray(alt)
    s, w = np.asarray(alt_share, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    keep = w > 0
    rows = np.arange(len(t))
    nll = -logp[rows, np.maximum(t, 0)]
    nll_alt = np.where(a == IGNORE, 0.0, -logp[rows, np.maximum(a, 0)])
    per_token = (1 - s) * nll + s * nll_alt
    return float((w * per_token)[keep].sum() / w[keep].sum())


# ----- hidden cases -----
def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _positions(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A packed row: examples with prompt (weight 0.5), answer (5) and document (1) positions, a
    Yes/No answer with a soft second target here and there, then padding (no target, weight 0)."""
    n, vocab = int(rng.integers(8, 40)), int(rng.integers(5, 30))
    padding = int(rng.integers(0, n // 3))
    log_probs = _log_softmax(rng.normal(0, 2, (n, vocab)))
    targets = rng.integers(0, vocab, n)
    weights = rng.choice([0.5, 1.0, 5.0], n)
    alt, share = np.full(n, IGNORE), np.zeros(n)
    soft = rng.random(n) < 0.3
    alt[soft], share[soft] = rng.integers(0, vocab, soft.sum()), rng.uniform(0.05, 0.95, soft.sum())
    if padding:
        targets[-padding:], weights[-padding:], alt[-padding:], share[-padding:] = IGNORE, 0, IGNORE, 0
    return log_probs, targets, alt, share, weights


def _hidden_soft_loss(rng: np.random.Generator) -> list[Case]:
    return [case(*_positions(rng)) for _ in range(6)]


_EXAMPLE = (np.log([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]),
            [0, 1, 2, IGNORE], [IGNORE, 2, IGNORE, IGNORE], [0.0, 0.3, 0.0, 0.0], [0.5, 5.0, 1.0, 0.0])

EXERCISES = [
    Exercise(
        id="A1.soft_loss", function="soft_target_loss", tier="core", points=2,
        task="soft_target_loss(log_probs, targets, alt, alt_share, weights): per position j, "
             "-(1 - s_j) log p(targets[j]) - s_j log p(alt[j]) (no second term where alt is -100); "
             "the mean of these weighted by weights over the positions whose weight is above 0.",
        reference=soft_target_loss,
        examples=(case(*_EXAMPLE),),
        hidden=_hidden_soft_loss,
        compare=close(rtol=1e-6, atol=1e-9),
    ),
]
