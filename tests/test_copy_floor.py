"""The copy floor `autotune bench` holds our kernels to: a kernel that only moves a problem's bytes. It
compiles for every kind of problem (on CPU, for sm_90 and sm_80); on a GPU it copies x into y (zeros
past x) and reads the weights, whatever the sizes' alignment."""
import math

import numpy as np
import pytest

from autotune import codegen, compiler
from autotune.kernels.copy import COPY_FLOOR, THREADS, UNITS_PER_THREAD
from autotune.problem import Problem

PROBLEMS = [
    Problem(op="dw", N=3, C=35, H=13, W=22, k=3, stride=1, act="relu6"),                       # odd sizes
    Problem(op="pw", N=1, C=16, H=7, W=9, C_out=96, act="none", bias=False, dtype="float32"),   # y larger than x
    Problem(op="ir", N=2, C=24, H=17, W=15, C_out=32, k=3, stride=2, act="relu6", expansion=6),  # x larger than y
    Problem(op="dwpw", N=1, C=32, H=14, W=14, C_out=64, k=3, stride=1, act="relu6", layout="nchw", dtype="float32"),
    Problem(op="ir", N=1, C=40, H=3, W=5, C_out=48, k=3, stride=1, act="relu6", expansion=6),   # weights-heavy
]


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_copy_floor_compiles_for_every_kind_of_problem(arch):
    codes = [codegen.render(COPY_FLOOR, p, {}).code for p in PROBLEMS]
    for p, binary in zip(PROBLEMS, compiler.compile_many(codes, arch)):
        assert not isinstance(binary, Exception), f"{p.key}: {binary}"
        assert binary.spill_bytes == 0


def test_its_grid_covers_the_largest_of_x_y_and_the_weights():
    deep = Problem(op="ir", N=1, C=160, H=7, W=7, C_out=320, k=3, stride=1, act="relu6", expansion=6,
                   dtype="float16", layout="nhwc")      # weights 20 times the activations
    for p in [*PROBLEMS, deep]:
        launch = COPY_FLOOR.launch(p, {})
        units = max(p.N * p.C * p.H * p.W, p.N * p.C_out * p.H_out * p.W_out, math.prod(p.weight_shape)) * p.itemsize / 16
        assert launch.block == (THREADS, 1, 1)
        assert units <= launch.grid[0] * THREADS * UNITS_PER_THREAD < units + THREADS * UNITS_PER_THREAD


@pytest.mark.gpu
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.key)
def test_copy_floor_moves_x_into_y(problem, arch):
    import cupy as cp
    from autotune.lookup import TunedKernel
    rng = np.random.default_rng(0)
    p = problem
    x = cp.asarray(rng.uniform(-1, 1, p.input_shape).astype(p.dtype))
    w = cp.asarray(rng.uniform(-1, 1, p.weight_shape).astype(p.dtype))
    b = cp.asarray(rng.uniform(-1, 1, p.bias_shape).astype(p.dtype)) if p.bias else None
    y = cp.full(p.output_shape, cp.nan, dtype=p.dtype)
    TunedKernel(p, COPY_FLOOR, {}, arch, fallback="")(x, w, b, out=y)
    flat_x, flat_y = x.ravel(), y.ravel()
    n = min(flat_x.size, flat_y.size)
    assert cp.array_equal(flat_y[:n], flat_x[:n])
    assert not cp.any(flat_y[n:])
