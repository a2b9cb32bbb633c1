"""Temperature scaling (fit by minimising NLL) and expected calibration error."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, logsumexp

from edgecascade.router.policy.policies import Classes, Floats

# The fit searches log T in this range: T from 0.05 to 20.
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def negative_log_likelihood(logits: Floats, labels: Classes, temperature: float) -> float:
    """Mean NLL of the labels under softmax(logits / temperature), for [N, K] logits; for the
    views of each input, [N, V, K], under the mean over views of those probabilities (the
    probabilities the edge answers with)."""
    log_p = log_softmax(np.asarray(logits, np.float64) / temperature, axis=-1)
    if log_p.ndim == 3:
        log_p = logsumexp(log_p, axis=1) - np.log(log_p.shape[1])
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: Floats, labels: Classes) -> float:
    """The temperature minimising the NLL of `labels` (use a calibration split, never test)."""
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def expected_calibration_error(probabilities: Floats, labels: Classes, bins: int = 15) -> float:
    """ECE of the top-1 probability over `bins` equal-width bins on (0, 1]."""
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = np.bincount(index, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(labels))
