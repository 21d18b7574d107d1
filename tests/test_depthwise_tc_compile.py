"""The tensor-core depthwise family: where it applies, its constraints, and every kind of variant
compiling for sm_80 and sm_90 without spills."""
import itertools
import random

import pytest

from autotune import codegen, compiler
from autotune.kernels import MAX_SHARED_BYTES
from autotune.kernels.depthwise import NHWC_TC
from autotune.problem import Problem
from autotune.searchspace import valid_configs


def fp16_nhwc(**kw):
    fields = dict(op="dw", N=2, C=32, H=28, W=28, k=3, act="relu6", dtype="float16", layout="nhwc")
    return Problem(**{**fields, **kw})


@pytest.mark.parametrize("problem, applies", [
    (fp16_nhwc(), True),
    (fp16_nhwc(C=36), False),                      # channels not whole 16-byte groups
    (fp16_nhwc(dtype="float32"), False),
    (fp16_nhwc(layout="nchw"), False),
])
def test_applies(problem, applies):
    assert NHWC_TC.applies(problem) is applies
    if not applies:
        assert NHWC_TC.check(problem, NHWC_TC.default_config(problem)) is not None


@pytest.mark.parametrize("size", [dict(H=1, W=1), dict(H=3, W=40), dict(H=112, W=112, C=8),
                                  dict(H=7, W=7, C=960), dict(H=2, W=9, C=16)])
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (7, 2)])
def test_default_is_valid_and_space_not_empty(size, k, stride):
    p = fp16_nhwc(k=k, stride=stride, **size)
    assert NHWC_TC.check(p, NHWC_TC.default_config(p)) is None
    assert valid_configs(NHWC_TC, p)


@pytest.mark.parametrize("change, reason", [
    (dict(tile_h=1, tile_w=8), "groups of 16"),
    (dict(ch_per_block=64), "larger than the channel count"),
    (dict(tile_h=1, tile_w=16, ch_per_block=8, warps=2), "warps for 1 work items"),
])
def test_check_rejects(change, reason):
    p = fp16_nhwc(C=16)
    assert reason in NHWC_TC.check(p, {**NHWC_TC.default_config(p), **change})


def test_shared_memory_limit():
    p = fp16_nhwc(k=7, C=64, H=112, W=112)
    big = dict(tile_h=16, tile_w=32, ch_per_block=64, warps=8)
    assert "shared memory" in NHWC_TC.check(p, big)
    assert all(NHWC_TC.launch(p, c).shared_mem == 0 for c in valid_configs(NHWC_TC, p)[:5])


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_variants_compile_without_spills(arch):
    rng = random.Random(arch)
    sources = []
    for (k, stride), bias, act in itertools.product([(3, 1), (3, 2), (5, 2), (7, 1)], (True, False),
                                                    ("none", "relu", "relu6")):
        p = fp16_nhwc(k=k, stride=stride, bias=bias, act=act, C=64, H=56, W=56)
        for config in rng.sample(valid_configs(NHWC_TC, p), 2):
            sources.append(codegen.render(NHWC_TC, p, config).code)
    results = compiler.compile_many(sources, arch, jobs=2)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, str(errors[0])[:2000]
    assert all(r.spill_bytes == 0 and r.registers <= 255 for r in results)
    assert max(r.shared_bytes for r in results) <= MAX_SHARED_BYTES
