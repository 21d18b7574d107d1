"""The streaming NHWC depthwise family: its constraints, its shared-memory count against the
compiler's, and every kind of variant compiling for sm_80 and sm_90."""
import itertools
import random

import pytest

from autotune import codegen, compiler
from autotune.kernels import MAX_SHARED_BYTES
from autotune.kernels.depthwise import NHWC_STREAM
from autotune.problem import Problem
from autotune.searchspace import valid_configs


def nhwc(**kw):
    fields = dict(op="dw", N=2, C=32, H=28, W=28, k=3, act="relu6", dtype="float16", layout="nhwc")
    return Problem(**{**fields, **kw})


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("size", [dict(H=1, W=1), dict(H=3, W=40), dict(H=112, W=112, C=8),
                                  dict(H=7, W=7, C=960), dict(H=2, W=9, C=6)])
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (7, 2)])
def test_default_is_valid_and_space_not_empty(dtype, size, k, stride):
    p = nhwc(k=k, stride=stride, dtype=dtype, **size)
    assert NHWC_STREAM.check(p, NHWC_STREAM.default_config(p)) is None
    assert valid_configs(NHWC_STREAM, p)


@pytest.mark.parametrize("change, reason", [
    (dict(vec=8), "does not divide C"),
    (dict(ch_per_block=64), "larger than the channel count"),
    (dict(out_h=4, strip=6), "strip not divisible"),
    (dict(tile_w=128), "tile larger than the output"),
    (dict(strip=64), "strip longer than the output"),
])
def test_check_rejects(change, reason):
    p = nhwc(C=12, H=20, W=20)
    assert reason in NHWC_STREAM.check(p, {**NHWC_STREAM.default_config(p), **change})


def test_ring_grows_with_depth_and_stride_until_it_does_not_fit():
    p = nhwc(C=64, H=112, W=112, k=7, stride=2, dtype="float32")
    cfg = dict(vec=4, ch_per_block=64, tile_w=64, out_h=4, out_w=1, strip=16, depth=1)
    deeper = {**cfg, "depth": 3}
    assert NHWC_STREAM.ring_bytes(p, deeper) > NHWC_STREAM.ring_bytes(p, cfg)
    assert "shared memory" in NHWC_STREAM.check(p, deeper)


def test_ring_holds_no_more_than_a_strip():
    p = nhwc(C=64, H=56, W=56, stride=2)
    one_step = dict(vec=8, ch_per_block=32, tile_w=16, out_h=4, out_w=1, strip=4, depth=1)
    # A strip of one step needs its window only: the slots for later steps would never be used.
    assert NHWC_STREAM.ring_bytes(p, one_step) == NHWC_STREAM.ring_bytes(p, {**one_step, "depth": 3})
    window_rows = (4 - 1) * 2 + 3
    assert NHWC_STREAM.ring_bytes(p, one_step) == window_rows * 34 * 32 * 2     # 33 columns padded to 34
    longer = {**one_step, "strip": 16}
    assert NHWC_STREAM.ring_bytes(p, {**longer, "depth": 3}) > NHWC_STREAM.ring_bytes(p, longer)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_variants_compile_without_spills_and_ring_size_matches(arch):
    rng = random.Random(arch)
    sources, expected_shared = [], []
    for (k, stride), dtype, act in itertools.product([(3, 1), (3, 2), (5, 2), (7, 1)], ("float16", "float32"),
                                                     ("none", "relu6")):
        p = nhwc(k=k, stride=stride, dtype=dtype, act=act, bias=act != "none", C=64, H=56, W=56)
        for config in [NHWC_STREAM.default_config(p), *rng.sample(valid_configs(NHWC_STREAM, p), 2)]:
            sources.append(codegen.render(NHWC_STREAM, p, config).code)
            weights = 0 if NHWC_STREAM._weights_in_registers(p, config) else 4 * k * k * config["ch_per_block"]
            expected_shared.append(NHWC_STREAM.ring_bytes(p, config) + weights)
    results = compiler.compile_many(sources, arch, jobs=2)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, str(errors[0])[:2000]
    assert all(r.registers <= 255 and r.spill_bytes <= 64 for r in results)
    # The constraint counts the ring as the compiler lays it out (weights in registers leave a
    # one-float placeholder array).
    assert all(abs(r.shared_bytes - e) <= 16 for r, e in zip(results, expected_shared))
    assert max(r.shared_bytes for r in results) <= MAX_SHARED_BYTES


def test_every_vector_width_compiles():
    """C = 35, 6, 12 (both dtypes) and 64 (fp16): one, two, four and eight channels per thread (the
    fp16-math helpers must not break a width they are not used at)."""
    problems = [nhwc(C=c, dtype=dtype) for c in (35, 6, 12) for dtype in ("float16", "float32")]
    configs = [NHWC_STREAM.default_config(p) for p in problems]
    problems.append(nhwc(C=64))
    configs.append(next(c for c in valid_configs(NHWC_STREAM, problems[-1]) if c["vec"] == 8))
    assert {c["vec"] for c in configs} == {1, 2, 4, 8}
    results = compiler.compile_many([codegen.render(NHWC_STREAM, p, c).code for p, c in zip(problems, configs)], "sm_90")
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, str(errors[0])[:2000]
