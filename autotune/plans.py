"""Fusion depth of a block: one fused kernel (depth = number of stages), or each stage in its own
kernel (depth 1), chosen per block and GPU from the verified times in the database.

A depth-1 plan costs the sum of its stages' best times, plus, for an inverted residual, an add
that reads two tensors and writes one at the GPU's copy bandwidth. Times of the stages come from
their own tuning (each stage is a dw or pw problem of its own), so a block is planned once its
stages and the block itself are tuned; with neither tuned it runs fused where a fused kernel
applies.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import kernels
from .problem import FUSED_OPS, Problem
from .store import gpu_id


@dataclass(frozen=True)
class Plan:
    depth: int              # kernels' worth of fusion: 1 = every stage alone, max_depth = one kernel
    max_depth: int
    stages: tuple           # the Problems run one after another (the block itself when fused)
    estimate_us: float | None
    reason: str


def plan_times(problem: Problem, store, gpu: dict) -> dict:
    """{'fused': us or None, 'unfused': us or None} on this GPU, from the database."""
    gid = gpu_id(gpu)

    def best(p):
        row = store.best(gid, p.key) if store is not None else None
        return row["time_us"] if row else None

    fused = best(problem)
    parts = [best(s) for s in problem.stages()]
    unfused = None
    if all(t is not None for t in parts):
        unfused = sum(parts)
        if problem.residual:
            info = store.gpu(gid)
            unfused += 3 * problem.N * problem.C_out * problem.H_out * problem.W_out * problem.itemsize \
                / info["copy_bandwidth"] * 1e6
    return {"fused": fused, "unfused": unfused}


def choose_plan(problem: Problem, store, gpu: dict) -> Plan:
    stages = problem.stages()
    depth = len(stages)
    if problem.op not in FUSED_OPS:
        return Plan(1, 1, (problem,), None, "a single convolution")
    fusable = bool(kernels.families_for(problem))
    times = plan_times(problem, store, gpu)
    fused, unfused = times["fused"], times["unfused"]
    if fusable and fused is not None and (unfused is None or fused <= unfused):
        return Plan(depth, depth, (problem,), fused,
                    f"fused {fused:.1f} us" + (f" vs {unfused:.1f} us unfused" if unfused else ""))
    if unfused is not None:
        return Plan(1, depth, tuple(stages), unfused,
                    f"unfused {unfused:.1f} us" + (f" vs {fused:.1f} us fused" if fused else ""))
    if fusable:
        return Plan(depth, depth, (problem,), None, "nothing measured: fused")
    return Plan(1, depth, tuple(stages), None, "no fused kernel fits this block: unfused")


class BlockKernel:
    """A block run stage by stage (depth 1): each stage's tuned kernel on the caller's stream, the
    intermediates in fresh buffers, the flat weights and biases cut into the stages' views."""

    def __init__(self, problem: Problem, stage_kernels: list, plan: Plan):
        self.problem, self.kernels, self.plan = problem, stage_kernels, plan
        self.fallback = "; ".join(k.fallback for k in stage_kernels)
        self._w_slices = _slices(problem.weight_parts)
        self._b_slices = _slices(problem.bias_parts) if problem.bias else [None] * len(stage_kernels)

    def __repr__(self):
        return f"BlockKernel({self.problem.key!r}, {self.plan.reason}, {self.kernels})"

    def __call__(self, x, w, bias=None, out=None):
        if self.problem.bias and bias is None:
            raise ValueError(f"bias: {self.problem.key} needs a bias of shape {self.problem.bias_shape}")
        flat_w = w.reshape(-1)
        flat_b = bias.reshape(-1) if bias is not None else None
        t = x
        last = len(self.kernels) - 1
        for i, (kernel, (w0, w1, shape), b) in enumerate(zip(self.kernels, self._w_slices, self._b_slices)):
            sb = flat_b[b[0]:b[1]] if b is not None else None
            t = kernel(t, flat_w[w0:w1].reshape(shape), sb, out=out if i == last else None)
        if self.problem.residual:
            t += x
        return t


def _slices(shapes) -> list:
    out, start = [], 0
    for shape in shapes:
        size = 1
        for s in shape:
            size *= s
        out.append((start, start + size, shape))
        start += size
    return out
