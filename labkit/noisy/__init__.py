"""Learning from noisy (LLM) labels: methods behind one call, noise injection, diagnostics.

    from labkit.noisy import fit_noisy, NOISY_METHODS
    model = fit_noisy("divide_mix", lambda seed: make_model("mlp", schema, seed=seed),
                      X_train, llm_probs, validation=(X_val, llm_val_probs), seed=0)

Modules, in the order they import each other: losses, selection (confident rows), stopping (what
every method shares), correction (forward loss correction), two_networks (co-teaching,
DivideMix), methods (the registry and fit_noisy); noise and memorization stand apart.
No method reads gold labels.
"""

from labkit.noisy.correction import estimate_transition, noise_rate
from labkit.noisy.losses import forward_corrected_bce, prior_penalty, sharpen, soft_bce
from labkit.noisy.memorization import memorization_curve
from labkit.noisy.methods import (
    NOISY_METHODS,
    NoisyMethod,
    RankingDisagreement,
    check_agreement,
    fit_noisy,
)
from labkit.noisy.noise import flip_soft_labels, inject_noise, simulate_soft_labels
from labkit.noisy.selection import Selection, confidence, select_confident
from labkit.noisy.stopping import ModelFactory, out_of_fold_proba, stopping_set
from labkit.noisy.two_networks import (
    DivideMixConfig,
    classwise_clean_probability,
    clean_probability,
)
from labkit.vertical.base import sides  # the class each target stands for, used by every method

__all__ = [
    "NOISY_METHODS", "DivideMixConfig", "ModelFactory", "NoisyMethod", "RankingDisagreement",
    "Selection", "check_agreement", "classwise_clean_probability", "clean_probability",
    "confidence", "estimate_transition", "fit_noisy", "flip_soft_labels", "forward_corrected_bce",
    "inject_noise",
    "memorization_curve", "noise_rate", "out_of_fold_proba", "prior_penalty", "select_confident",
    "sharpen", "sides", "simulate_soft_labels", "soft_bce", "stopping_set",
]
