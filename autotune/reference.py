"""Float64 NumPy reference for every op, and the tolerances kernels are held to."""
from __future__ import annotations

import numpy as np

from .problem import FUSED_OPS, Problem

# |out - ref| <= RTOL * (|ref| + max|ref|): fp32 results differ from float64 only by summation order;
# fp16 results additionally round once on store (2^-11 relative); TF32 (Problem.tolerance, float32
# problems that allow it) rounds every operand to fp16's 10-bit mantissa.
RTOL = {"float32": 1e-5, "float16": 2e-3, "tf32": 2e-3}


def to_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "nchw" else a.transpose(0, 3, 1, 2)


def from_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "nchw" else a.transpose(0, 2, 3, 1)


def activate(y: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, 0.0)
    if act == "relu6":
        return np.clip(y, 0.0, 6.0)
    return y


def split_parts(flat, shapes) -> list:
    """A fused block's flat weight (or bias) array cut into its stages' tensors."""
    flat = np.asarray(flat).reshape(-1)
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def reference(problem: Problem, x, w, bias=None) -> np.ndarray:
    """The problem's output in float64, in the problem's layout. A fused block runs its stages
    in float64 one after another (no rounding in between) and adds the residual."""
    p = problem
    if p.op in FUSED_OPS:
        stages = p.stages()
        ws = split_parts(w, p.weight_parts)
        bs = split_parts(bias, p.bias_parts) if p.bias else [None] * len(stages)
        y = np.asarray(x, dtype=np.float64)
        for stage, sw, sb in zip(stages, ws, bs):
            y = reference(stage, y, sw, sb)
        return y + np.asarray(x, dtype=np.float64) if p.residual else y
    xn = to_nchw(np.asarray(x, dtype=np.float64), p.layout)
    w = np.asarray(w, dtype=np.float64)
    if p.op in ("dw", "conv"):
        xp = np.pad(xn, ((0, 0), (0, 0), (p.padding, p.padding), (p.padding, p.padding)))
        y = np.zeros((p.N, p.C_out, p.H_out, p.W_out))
        span_h, span_w = (p.H_out - 1) * p.stride + 1, (p.W_out - 1) * p.stride + 1
        for ky in range(p.k):
            for kx in range(p.k):
                window = xp[:, :, ky:ky + span_h:p.stride, kx:kx + span_w:p.stride]
                if p.op == "dw":        # channel c sees only channel c
                    y += window * w[:, 0, ky, kx][None, :, None, None]
                else:                   # every output channel sees every input channel
                    y += np.einsum("oc,nchw->nohw", w[:, :, ky, kx], window, optimize=True)
    else:
        y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], xn, optimize=True)
    if p.bias:
        y = y + np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return from_nchw(activate(y, p.act), p.layout)


def direct_reference(problem: Problem, x, w, bias=None) -> np.ndarray:
    """The definition, loop by loop: slow, for checking `reference` on tiny sizes."""
    p = problem
    if p.op in FUSED_OPS:
        raise ValueError("direct_reference covers single convolutions; a block is checked stage by stage")
    xn = to_nchw(np.asarray(x, dtype=np.float64), p.layout)
    y = np.zeros((p.N, p.C_out, p.H_out, p.W_out))
    for n in range(p.N):
        for co in range(p.C_out):
            for ho in range(p.H_out):
                for wo in range(p.W_out):
                    s = float(bias[co]) if p.bias else 0.0
                    if p.op == "pw":
                        for ci in range(p.C):
                            s += float(w[co, ci, 0, 0]) * xn[n, ci, ho, wo]
                    else:
                        for ky in range(p.k):
                            for kx in range(p.k):
                                hi, wi = ho * p.stride - p.padding + ky, wo * p.stride - p.padding + kx
                                if not (0 <= hi < p.H and 0 <= wi < p.W):
                                    continue
                                if p.op == "dw":
                                    s += float(w[co, 0, ky, kx]) * xn[n, co, hi, wi]
                                else:
                                    for ci in range(p.C):
                                        s += float(w[co, ci, ky, kx]) * xn[n, ci, hi, wi]
                    y[n, co, ho, wo] = s
    return from_nchw(activate(y, p.act), p.layout)


def random_inputs(problem: Problem, rng: np.random.Generator) -> dict:
    """Fresh inputs in the problem's dtype: activations in [-1, 1), weights scaled like a trained
    layer's so outputs stay O(1) whatever the fan-in (and relu6 clips some of them)."""
    p, dt = problem, np.dtype(problem.dtype)

    def weights(stage):
        bound = 2.0 / np.sqrt(stage.fan_in)
        return rng.uniform(-bound, bound, stage.weight_shape).astype(dt).reshape(-1)

    stages = p.stages()
    arrays = {
        "x": rng.uniform(-1, 1, p.input_shape).astype(dt),
        "w": np.concatenate([weights(s) for s in stages]).reshape(p.weight_shape),
    }
    arrays["bias"] = rng.uniform(-0.5, 0.5, p.bias_shape).astype(dt) if p.bias else None
    return arrays


def compare(out, ref, dtype: str, rtol: float | None = None) -> tuple[bool, float]:
    """(passes, worst error relative to the tolerance; rtol defaults to RTOL[dtype]). NaN - e.g. an
    unwritten poisoned element - never passes. Works on NumPy arrays and, on the GPU, on CuPy arrays
    (no copy to the host)."""
    xp = _array_module(out)
    if tuple(out.shape) != tuple(ref.shape):
        return False, float("inf")
    if out.size == 0:
        return True, 0.0
    ref = xp.asarray(ref, dtype=xp.float64)
    mag = xp.abs(ref)
    tol = (RTOL[dtype] if rtol is None else rtol) * (mag + mag.max() + 1e-30)
    ratio = xp.abs(out.astype(xp.float64) - ref) / tol
    if bool(xp.isnan(ratio).any()):
        return False, float("nan")
    worst = float(ratio.max())
    return worst <= 1.0, worst


def _array_module(a):
    if isinstance(a, np.ndarray):
        return np
    import cupy
    return cupy.get_array_module(a)
