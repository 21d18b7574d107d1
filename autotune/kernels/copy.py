"""The copy floor: a kernel that moves a problem's bytes once and computes nothing (templates/
copy_floor.cu.j2). Not a family the tuner searches; `autotune bench` launches it like our kernels to
show what a bare copy of the same bytes takes at that size."""
from __future__ import annotations

import math

from . import Launch, ceil_div

THREADS = 256
UNITS_PER_THREAD = 2       # 16-byte units; a grid of ~2 per thread measured as fast as any (H100)


class CopyFloor:
    name = "copy_floor"
    template = "copy_floor.cu.j2"
    entry = "copy_floor"

    def applies(self, problem) -> bool:
        return True

    def template_params(self, problem, config) -> dict:
        p = problem
        return {"WEIGHT_ELEMS": math.prod(p.weight_shape), "BIAS_ELEMS": p.bias_shape[0] if p.bias else 0}

    def launch(self, problem, config) -> Launch:
        """A thread per UNITS_PER_THREAD units of the largest array."""
        units = largest_array_units(problem)
        return Launch(grid=(max(1, ceil_div(units, THREADS * UNITS_PER_THREAD)), 1, 1), block=(THREADS, 1, 1))


def largest_array_units(problem) -> int:
    """16-byte units of the problem's largest array: x, y or (deep layers at batch 1) the weights."""
    p = problem
    return max(p.N * p.C * p.H * p.W, p.N * p.C_out * p.H_out * p.W_out, math.prod(p.weight_shape)) * p.itemsize // 16


COPY_FLOOR = CopyFloor()
