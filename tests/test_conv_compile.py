"""The dense conv op (a network's stem) and its tensor-core family: the problem, where the family
applies, its constraints, and every variant compiling for sm_80 and sm_90 without spills."""
import itertools

import numpy as np
import pytest

from autotune import codegen, compiler
from autotune.kernels import MAX_SHARED_BYTES, families_for
from autotune.kernels.conv import TensorCoreConv
from autotune.problem import Problem, ProblemError
from autotune.reference import direct_reference, random_inputs, reference
from autotune.searchspace import valid_configs

CONV = TensorCoreConv()


def stem(**kw):
    fields = dict(op="conv", N=2, C=3, H=32, W=30, C_out=32, k=3, stride=2, act="relu6",
                  dtype="float16", layout="nhwc")
    return Problem(**{**fields, **kw})


def test_problem_fields_and_key():
    p = stem(N=16, H=224, W=224)
    assert p.key == "conv k3 s2 p1 N16 C3->32 224x224 relu6 bias float16 nhwc"
    assert (p.H_out, p.W_out, p.weight_shape, p.fan_in) == (112, 112, (32, 3, 3, 3), 27)
    assert p.flops() == 2 * 16 * 32 * 112 * 112 * 27
    with pytest.raises(ProblemError, match="C_out"):
        Problem("conv", N=1, C=3, H=8, W=8, k=3)
    with pytest.raises(ProblemError, match="k:"):
        Problem("conv", N=1, C=3, H=8, W=8, C_out=8, k=1)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_reference_matches_the_definition(layout):
    p = stem(N=2, C=2, H=5, W=6, C_out=3, k=3, stride=2, layout=layout, dtype="float32", act="none")
    data = random_inputs(p, np.random.default_rng(0))
    assert np.allclose(reference(p, data["x"], data["w"], data["bias"]),
                       direct_reference(p, data["x"], data["w"], data["bias"]), rtol=1e-12, atol=1e-12)
    q = p.replace(k=5, stride=1, padding=1, act="relu6")
    data = random_inputs(q, np.random.default_rng(1))
    assert np.allclose(reference(q, data["x"], data["w"], data["bias"]),
                       direct_reference(q, data["x"], data["w"], data["bias"]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("problem, applies", [
    (stem(), True),
    (stem(C_out=36), False),                   # not whole n8 tiles
    (stem(C_out=72), False),                   # more accumulator tiles than a thread holds
    (stem(C=8), False),                        # 3x3x8 = 72 > 64 window elements
    (stem(C=4, C_out=64), False),              # 3 k16 steps x 8 n8 tiles of B in registers
    (stem(dtype="float32"), False),
    (stem(layout="nchw"), False),
])
def test_applies(problem, applies):
    assert CONV.applies(problem) is applies
    assert ("conv_nhwc_tc" in [f.name for f in families_for(problem)]) is applies
    if not applies:
        assert CONV.check(problem, CONV.default_config(problem)) is not None


@pytest.mark.parametrize("size", [dict(H=1, W=1), dict(H=3, W=40), dict(H=224, W=224), dict(H=9, W=2)])
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 2), (7, 1)])
def test_default_is_valid_and_space_not_empty(size, k, stride):
    p = stem(k=k, stride=stride, C=1 if k == 7 else 2, C_out=16, **size)
    assert CONV.check(p, CONV.default_config(p)) is None
    assert valid_configs(CONV, p)


@pytest.mark.parametrize("size, change, reason", [
    (dict(H=64, W=64), dict(tile_h=1, tile_w=8), "groups of 16"),
    (dict(H=64, W=64), dict(tile_h=1, tile_w=16, warps=2), "warps for 1 m16 tiles"),
    (dict(H=64, W=64), dict(tile_h=16, tile_w=64, warps=8), "input elements per thread"),
    (dict(H=48, W=48), dict(tile_h=4, tile_w=16, warps=4, tiles=8), "12 tiles: too few for 8 per block"),
])
def test_check_rejects(size, change, reason):
    p = stem(N=1, **size)
    assert reason in CONV.check(p, {**CONV.default_config(p), **change})


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_variants_compile_without_spills(arch):
    sources = []
    for (c, c_out, k, stride), bias, act in itertools.product(
            [(3, 32, 3, 2), (3, 16, 3, 1), (5, 24, 3, 2), (1, 32, 7, 2), (2, 64, 3, 1), (2, 8, 5, 1)], (True, False),
            ("none", "relu6")):
        p = stem(C=c, C_out=c_out, k=k, stride=stride, bias=bias, act=act, H=56, W=56)
        configs = valid_configs(CONV, p)
        sources += [codegen.render(CONV, p, cfg).code for cfg in configs[::max(1, len(configs) // 4)]]
    results = compiler.compile_many(sources, arch, jobs=2)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, str(errors[0])[:2000]
    assert all(r.spill_bytes == 0 and r.registers <= 255 for r in results)
    assert max(r.shared_bytes for r in results) <= MAX_SHARED_BYTES
