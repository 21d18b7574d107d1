"""Fusion depth of a block, chosen per block and GPU from the verified times in the database.

An inverted residual can run as one fused kernel (depth 3); as two (depth 2): its expand followed by a
fused depthwise + project kernel (the dwpw problem of its second half), or a fused expand + depthwise
kernel (the pwdw problem of its first half) followed by its project; or as each stage in its own kernel
(depth 1). A dwpw or pwdw block runs fused (depth 2) or stage by stage (depth 1).

A sweep times each plan whole, its tuned kernels back to back as lookup runs them (plan_timing.py),
and the fastest timed plan wins. Summing the kernels' own times instead misjudges a chain: each was
tuned reading inputs cold from memory, while in the chain a kernel finds its producer's output still
in L2. Without such timings (an older database, no PyTorch to time with), a plan of several kernels
is estimated as the sum of its kernels' best times, plus, for an inverted residual, an add that reads
two tensors and writes one at the GPU's copy bandwidth. With nothing measured, a block runs fused
where a fused kernel applies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

from . import kernels
from .problem import FUSED_OPS, Problem
from .store import gpu_id


@dataclass(frozen=True)
class Step:
    problem: Problem     # what this kernel computes
    parts: tuple         # (first, end): the block's weight (and bias) parts it takes


@dataclass(frozen=True)
class Plan:
    depth: int              # stages fused per kernel at most: 1 = every stage alone
    max_depth: int          # the block's stage count: one fused kernel
    steps: tuple            # Steps, run one after another
    estimate_us: float | None
    reason: str


def candidate_plans(problem: Problem) -> list[tuple[int, tuple]]:
    """[(depth, steps)] from the deepest fusion down; a single convolution is its own only plan."""
    stages = problem.stages()
    n = len(stages)
    plans = [(n, (Step(problem, (0, n)),))]
    if n == 1:
        return plans
    if problem.op == "ir" and n == 3:
        second_half = problem.replace(op="dwpw", C=problem.hidden, expansion=1)
        plans.append((2, (Step(stages[0], (0, 1)), Step(second_half, (1, 3)))))
        first_half = problem.replace(op="pwdw", C_out=problem.hidden, expansion=1, act2="none")
        plans.append((2, (Step(first_half, (0, 2)), Step(stages[2], (2, 3)))))
    plans.append((1, tuple(Step(s, (i, i + 1)) for i, s in enumerate(stages))))
    return plans


def plan_time(problem: Problem, steps, store, gpu: dict) -> float | None:
    """The plan's time on this GPU from the database, None if a kernel of it is untimed or cannot run."""
    if store is None:
        return None
    gid = gpu_id(gpu)
    total = 0.0
    for step in steps:
        row = store.best(gid, step.problem.key) if kernels.families_for(step.problem) else None
        if row is None:
            return None
        total += row["time_us"]
    if problem.residual and len(steps) > 1:
        # a last 1x1 adds the input in its epilogue (one more read); otherwise an add reads two, writes one
        passes = 1 if adds_residual(steps[-1].problem) else 3
        info = store.gpu(gid)
        total += passes * problem.N * problem.C_out * problem.H_out * problem.W_out * problem.itemsize \
            / info["copy_bandwidth"] * 1e6
    return total


def adds_residual(last: Problem) -> bool:
    """Whether the last kernel of a several-kernel plan adds an inverted residual's input itself: the
    1x1 families have a residual epilogue (a project after a fused pwdw half too); a fused dwpw half
    does not."""
    return any(getattr(f, "residual_epilogue", False) for f in kernels.families_for(last))


def plan_name(steps) -> str:
    """Each kernel's op, e.g. 'pwdw,pw': tells the two depth-2 plans apart; names timed plans in the database."""
    return ",".join(s.problem.op for s in steps)


def format_timed(times: dict) -> str:
    """'pwdw,pw 29.8 us, ir 38.8 us': a block's plans timed whole ({plan name: us}), fastest first."""
    return ", ".join(f"{name} {us:.1f} us" for name, us in sorted(times.items(), key=lambda kv: kv[1]))


def describe(depth: int, steps) -> str:
    """'depth 2 (pwdw, pw)'."""
    return f"depth {depth} (" + plan_name(steps).replace(",", ", ") + ")"


def choose_plan(problem: Problem, store, gpu: dict) -> Plan:
    candidates = candidate_plans(problem)
    max_depth = candidates[0][0]
    if problem.op not in FUSED_OPS:
        return Plan(1, 1, candidates[0][1], None, "a single convolution")
    whole = store.plan_times(gpu_id(gpu), problem.key) if store is not None else {}
    timed = [(whole[plan_name(steps)], depth, steps) for depth, steps in candidates if plan_name(steps) in whole]
    how = "timed whole"
    if not timed:
        timed = [(plan_time(problem, steps, store, gpu), depth, steps) for depth, steps in candidates]
        timed = [t for t in timed if t[0] is not None]
        how = "estimated from its kernels"
    if timed:
        best_us, depth, steps = min(timed, key=lambda t: (t[0], -t[1]))
        others = ", ".join(f"{describe(d, s)}: {t:.1f} us" for t, d, s in timed if s is not steps)
        return Plan(depth, max_depth, steps, best_us,
                    f"{describe(depth, steps)}: {best_us:.1f} us {how}" + (f" ({others})" if others else ""))
    for depth, steps in candidates:        # nothing measured: the deepest plan whose kernels all exist
        if all(kernels.families_for(s.problem) for s in steps):
            return Plan(depth, max_depth, steps, None, f"nothing measured: depth {depth}")
    raise AssertionError(f"no plan runs {problem.key}")      # depth 1 always can


class BlockKernel:
    """A block run as several kernels (depth below its stage count): each step's tuned kernel on the
    caller's stream, the intermediates in fresh buffers, the flat weights and biases cut into the
    steps' views; an inverted residual's input is added by the last kernel (its residual epilogue) or,
    where it has none, by an add after it."""

    def __init__(self, problem: Problem, step_kernels: list, plan: Plan):
        self.problem, self.kernels, self.plan = problem, step_kernels, plan
        self.fallback = "; ".join(k.fallback for k in step_kernels)
        # where each part starts in the flat arrays, and the end
        w_ends = [0, *accumulate(math.prod(s) for s in problem.weight_parts)]
        b_ends = [0, *accumulate(s[0] for s in problem.bias_parts)] if problem.bias else None
        self._views = []
        for step in plan.steps:
            first, end = step.parts
            bias = (b_ends[first], b_ends[end]) if b_ends else None
            self._views.append(((w_ends[first], w_ends[end]), step.problem.weight_shape, bias))

    def __repr__(self):
        return f"BlockKernel({self.problem.key!r}, {self.plan.reason}, {self.kernels})"

    def __call__(self, x, w, bias=None, out=None):
        if self.problem.bias and bias is None:
            raise ValueError(f"bias: {self.problem.key} needs a bias of shape {self.problem.bias_shape}")
        flat_w = w.reshape(-1)
        flat_b = bias.reshape(-1) if bias is not None else None
        t = x
        last = len(self.kernels) - 1
        for i, (kernel, ((w0, w1), shape, b)) in enumerate(zip(self.kernels, self._views)):
            sb = flat_b[b[0]:b[1]] if b is not None else None
            residual = {"residual": x} if kernel.add_residual else {}     # only the last kernel adds it
            t = kernel(t, flat_w[w0:w1].reshape(shape), sb, out=out if i == last else None, **residual)
        if self.problem.residual and not self.kernels[last].add_residual:
            t += x
        return t
