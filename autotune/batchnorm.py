"""Folding an inference-mode BatchNorm into the convolution before it."""
from __future__ import annotations

import numpy as np


def fold_batchnorm(weight, bias, gamma, beta, mean, var, eps: float = 1e-5):
    """(weight', bias') such that conv(x, weight') + bias' == BN(conv(x, weight) + bias).

    weight: [C_out, ...] in PyTorch's layout (any conv); bias: [C_out] or None; gamma, beta, mean,
    var: [C_out]. Computed in float64, returned in weight's dtype.
    """
    w = np.asarray(weight)
    c_out = w.shape[0]
    params = {"gamma": gamma, "beta": beta, "mean": mean, "var": var}
    for name, value in params.items():
        if np.shape(value) != (c_out,):
            raise ValueError(f"{name}: shape {np.shape(value)} does not match the {c_out} output channels")
    if bias is not None and np.shape(bias) != (c_out,):
        raise ValueError(f"bias: shape {np.shape(bias)} does not match the {c_out} output channels")
    if eps <= 0:
        raise ValueError(f"eps: must be positive, got {eps}")
    g, b, m, v = (np.asarray(params[k], dtype=np.float64) for k in ("gamma", "beta", "mean", "var"))
    scale = g / np.sqrt(v + eps)
    folded_w = w.astype(np.float64) * scale.reshape((c_out,) + (1,) * (w.ndim - 1))
    b0 = np.zeros(c_out) if bias is None else np.asarray(bias, dtype=np.float64)
    folded_b = (b0 - m) * scale + b
    return folded_w.astype(w.dtype), folded_b.astype(w.dtype)
