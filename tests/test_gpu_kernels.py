"""Every kernel family against the float64 reference on a GPU: the default configuration and a
sample of valid tuned ones, on awkward shapes (H != W, sizes off every tile, batch 3, channel
counts off the vector width, stride 2 with odd sizes)."""
import random

import pytest

from autotune import codegen, compiler, kernels
from autotune.problem import Problem
from autotune.searchspace import valid_configs

pytestmark = pytest.mark.gpu

AWKWARD = [
    dict(op="dw", N=3, C=35, H=13, W=22, k=3, stride=1, act="relu6"),
    dict(op="dw", N=3, C=24, H=17, W=9, k=3, stride=2, act="relu"),
    dict(op="dw", N=1, C=40, H=15, W=31, k=5, stride=2, act="none", bias=False),
    dict(op="dw", N=2, C=16, H=11, W=11, k=7, stride=1, act="relu6"),
    dict(op="dw", N=1, C=8, H=28, W=28, k=3, stride=1, act="none", padding=0),
    dict(op="pw", N=3, C=35, H=13, W=22, C_out=19, act="relu6"),
    dict(op="pw", N=1, C=16, H=7, W=9, C_out=96, act="none"),
    dict(op="pw", N=2, C=96, H=14, W=14, C_out=24, act="relu", bias=False),
    dict(op="pw", N=1, C=160, H=5, W=3, C_out=40, act="none"),
    dict(op="pw", N=2, C=576, H=7, W=9, C_out=40, act="relu6"),      # long K: clusters share it
]


def _threads_per_channel(family, problem):
    """Sort key: threads per block over the channels a block owns (ch_per_block or block_n)."""
    def key(config):
        channels = config.get("ch_per_block") or config.get("block_n") or 1
        return (family.launch(problem, config).threads / channels, str(sorted(config.items())))
    return key


def every_parameter_value(family, problem, rng) -> list:
    """The default configuration, then for every value of every parameter a valid configuration with it
    (where one fits), picked by rng."""
    valid = valid_configs(family, problem)
    configs = [family.default_config(problem)]
    for name, values in family.space(problem).items():
        for value in values:
            matching = [c for c in valid if c[name] == value]
            if matching:
                configs.append(rng.choice(matching))
    return configs


def every_dtype_and_layout(specs) -> list:
    return [Problem(**spec, dtype=dtype, layout=layout)
            for spec in specs for dtype in ("float32", "float16") for layout in ("nchw", "nhwc")]


@pytest.mark.parametrize("problem", every_dtype_and_layout(AWKWARD), ids=lambda p: p.key)
def test_kernels_match_reference(problem, arch):
    from autotune.runner import ProblemData, verify, load_function
    data = ProblemData.create(problem, seed=hash(problem.key) % 1000)
    rng = random.Random(problem.key)
    for family in kernels.families_for(problem, arch):
        valid = valid_configs(family, problem)
        # the default, a random sample, and the block with the fewest threads per channel it owns
        # (cooperative loads and stores must still cover the whole tile)
        configs = [family.default_config(problem), *rng.sample(valid, min(12, len(valid))),
                   min(valid, key=_threads_per_channel(family, problem))]
        for config in configs:
            src = codegen.render(family, problem, config)
            binary = compiler.compile_code(src.code, arch)
            fn = load_function(binary, family.entry)
            ok, err = verify(fn, family.launch(problem, config), data)
            assert ok, f"{family.name} {config}: worst error / tolerance = {err}"


# The streaming pointwise family walks several pixel tiles per block only where the pixels are many:
# shapes big enough for every `tiles` value, with a partial last tile and channels off the vector width.
STREAMING = [
    dict(op="pw", N=8, C=24, H=57, W=61, C_out=144, act="relu6"),     # 16 tiles per block fit
    dict(op="pw", N=2, C=36, H=71, W=53, C_out=22, act="none", bias=False),
    dict(op="pw", N=5, C=16, H=45, W=47, C_out=96, act="relu"),
]


@pytest.mark.parametrize("problem", [Problem(**s, dtype="float16", layout="nhwc") for s in STREAMING],
                         ids=lambda p: p.key)
def test_streaming_pointwise_matches_reference(problem, arch):
    from autotune.kernels.pointwise import STREAM_FAMILY as family
    from autotune.runner import ProblemData, verify, load_function
    data = ProblemData.create(problem, seed=hash(problem.key) % 1000)
    valid = valid_configs(family, problem)
    configs = every_parameter_value(family, problem, random.Random(problem.key))
    assert {c["tiles"] for c in configs} == {c["tiles"] for c in valid} and max(c["tiles"] for c in valid) >= 4
    for config in configs:
        binary = compiler.compile_code(codegen.render(family, problem, config).code, arch)
        ok, err = verify(load_function(binary, family.entry), family.launch(problem, config), data)
        assert ok, f"{family.name} {config}: worst error / tolerance = {err}"


# The streaming depthwise family walks strips of up to 16 output rows through a ring of a few input
# rows: tall images (many strips; the ring wraps several times in each), a partial last strip and
# column tile, weights in shared memory (k=5 with 8 channels per thread), channels off the block.
STREAMING_DW = [
    dict(op="dw", N=2, C=40, H=67, W=70, k=3, stride=1, act="relu6"),
    dict(op="dw", N=3, C=24, H=131, W=45, k=3, stride=2, act="relu", bias=False),
    dict(op="dw", N=1, C=48, H=75, W=33, k=5, stride=1, act="none"),
    dict(op="dw", N=1, C=16, H=90, W=20, k=7, stride=2, act="relu6"),
]


@pytest.mark.parametrize("problem", [Problem(**s, dtype=dtype, layout="nhwc") for s in STREAMING_DW
                                     for dtype in ("float16", "float32")], ids=lambda p: p.key)
def test_streaming_depthwise_matches_reference(problem, arch):
    from autotune.kernels.depthwise import NHWC_STREAM as family
    from autotune.runner import ProblemData, verify, load_function
    data = ProblemData.create(problem, seed=hash(problem.key) % 1000)
    configs = every_parameter_value(family, problem, random.Random(problem.key))
    assert max(c["strip"] for c in configs) == 16
    for config in configs:
        binary = compiler.compile_code(codegen.render(family, problem, config).code, arch)
        ok, err = verify(load_function(binary, family.entry), family.launch(problem, config), data)
        assert ok, f"{family.name} {config}: worst error / tolerance = {err}"


# The wgmma family: pixels and output channels off every tile, K long enough for every cluster split.
WGMMA = [
    dict(op="pw", N=3, C=960, H=9, W=11, C_out=40, act="relu6"),
    dict(op="pw", N=2, C=200, H=7, W=5, C_out=22, act="none", bias=False),
]


@pytest.mark.parametrize("problem", [Problem(**s, dtype="float16", layout="nhwc") for s in WGMMA], ids=lambda p: p.key)
def test_wgmma_pointwise_matches_reference(problem, arch):
    """Every value of every parameter (cluster splits included), plain and with the residual epilogue."""
    from autotune.kernels.pointwise import WGMMA_FAMILY as family
    from autotune.runner import ProblemData, verify, load_function
    if not kernels.supports(family, arch):
        pytest.skip(f"wgmma needs sm_90, this GPU is {arch}")
    data = ProblemData.create(problem, seed=5)
    configs = every_parameter_value(family, problem, random.Random(problem.key))
    assert {c["cluster_k"] for c in configs} == {1, 2, 4}
    for config in configs:
        binary = compiler.compile_code(codegen.render(family, problem, config).code, arch)
        ok, err = verify(load_function(binary, family.entry), family.launch(problem, config), data)
        assert ok, f"{family.name} {config}: worst error / tolerance = {err}"
    _check_residual_epilogue(problem, [(family, c) for c in configs[:6]], arch)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_depthwise_weights_and_biases_at_unaligned_addresses(dtype, arch):
    """The NHWC depthwise kernels read a thread's weights and biases as packs when their pointers
    allow it; a weight or bias tensor that starts one element off (a view into a larger buffer) takes
    the element-by-element path and gives the same result."""
    import cupy
    from autotune.runner import ProblemData, verify, load_function
    problem = Problem(op="dw", N=2, C=40, H=13, W=11, k=3, stride=1, act="relu6", dtype=dtype, layout="nhwc")
    data = ProblemData.create(problem, seed=11)
    x, w, b, y = data.sets[0]
    w_buffer, b_buffer = cupy.empty(w.size + 1, w.dtype), cupy.empty(b.size + 1, b.dtype)
    w_off, b_off = w_buffer[1:].reshape(w.shape), b_buffer[1:]
    w_off[...], b_off[...] = w, b
    assert w_off.data.ptr % (2 * w.itemsize) and b_off.data.ptr % (2 * b.itemsize)    # no pack of 2 fits
    data.sets[0] = (x, w_off, b_off, y)
    rng = random.Random(dtype)
    for family in kernels.families_for(problem, arch):
        if family.name not in ("depthwise_nhwc", "depthwise_nhwc_stream"):
            continue
        valid = valid_configs(family, problem)
        widest = [c for c in valid if c["vec"] == max(v["vec"] for v in valid)]
        for config in [family.default_config(problem), *rng.sample(widest, min(4, len(widest)))]:
            binary = compiler.compile_code(codegen.render(family, problem, config).code, arch)
            ok, err = verify(load_function(binary, family.entry), family.launch(problem, config), data)
            assert ok, f"{family.name} {config}: worst error / tolerance = {err}"


@pytest.mark.parametrize("problem", [Problem(op="pw", N=3, C=40, H=13, W=11, C_out=24, act=act, dtype=dtype, layout=layout)
                                     for dtype, layout, act in (("float16", "nhwc", "none"), ("float16", "nchw", "relu"),
                                                                ("float32", "nhwc", "relu6"), ("float32", "nchw", "none"))],
                         ids=lambda p: p.key)
def test_residual_epilogue_matches_reference(problem, arch):
    """Every pointwise family rendered with the residual epilogue: y = act(conv + bias) + residual."""
    rng = random.Random(problem.key)
    runs = []
    for family in kernels.families_for(problem, arch):
        valid = valid_configs(family, problem)
        runs += [(family, c) for c in (family.default_config(problem), *rng.sample(valid, min(4, len(valid))))]
    _check_residual_epilogue(problem, runs, arch)


def _check_residual_epilogue(problem, runs, arch):
    """Each (family, config) of `runs`, rendered with the residual epilogue, against the reference plus
    the residual, on fresh inputs and a NaN-poisoned output, at the problem's tolerance."""
    import cupy
    import numpy as np
    from autotune.reference import compare, random_inputs, reference
    from autotune.runner import launch, load_function
    host = random_inputs(problem, np.random.default_rng(5))
    residual = np.random.default_rng(6).standard_normal(problem.output_shape).astype(problem.dtype)
    want = reference(problem, **host) + residual.astype(np.float64)
    x, w, r = (cupy.asarray(a) for a in (host["x"], host["w"], residual))
    b = cupy.asarray(host["bias"]) if host["bias"] is not None else None
    for family, config in runs:
        binary = compiler.compile_code(codegen.render(family, problem, config, add_residual=True).code, arch)
        y = cupy.full(problem.output_shape, cupy.nan, dtype=problem.dtype)
        launch(load_function(binary, family.entry), family.launch(problem, config), x, w, b, y, problem, residual=r)
        ok, err = compare(cupy.asnumpy(y), want, problem.tolerance)
        assert ok, f"{family.name} {config} + residual: worst error / tolerance = {err}"


# TensorRT's HWC8 format pads every pixel's channels to a multiple of 8: kernels then run with
# ldx / ldy above C / C_out. Padding values are arbitrary (here large ones): outputs must not depend
# on them, and each family must run every configuration the exporters would pick for that format.
PADDED = [
    dict(op="dw", N=2, C=36, H=13, W=17, k=3, stride=1, act="relu6"),
    dict(op="dw", N=1, C=20, H=15, W=9, k=3, stride=2, act="none", bias=False),
    dict(op="pw", N=2, C=36, H=9, W=11, C_out=20, act="relu6"),
    dict(op="pw", N=1, C=12, H=7, W=7, C_out=44, act="none"),
]


@pytest.mark.parametrize("problem", [Problem(**s, dtype="float16", layout="nhwc") for s in PADDED],
                         ids=lambda p: p.key)
def test_nhwc_kernels_with_padded_channel_strides(problem, arch):
    import cupy
    import numpy as np
    from autotune.exporters.trt_python import format_reason, padded8
    from autotune.reference import compare, random_inputs, reference
    from autotune.runner import launch, load_function
    ldx, ldy = padded8(problem.C), padded8(problem.C_out)
    assert ldx > problem.C and ldy > problem.C_out
    host = random_inputs(problem, np.random.default_rng(7))
    want = reference(problem, **host)
    x = cupy.full((*problem.input_shape[:3], ldx), 1000.0, dtype=problem.dtype)
    x[..., :problem.C] = cupy.asarray(host["x"])
    w = cupy.asarray(host["w"])
    b = cupy.asarray(host["bias"]) if host["bias"] is not None else None
    rng = random.Random(problem.key)
    tried = 0
    for family in kernels.families_for(problem, arch):
        fits = [c for c in valid_configs(family, problem) if format_reason(family, problem, c, ldx, ldy) is None]
        default = family.default_config(problem)
        configs = ([default] if default in fits else []) + rng.sample(fits, min(6, len(fits)))
        for config in configs:
            binary = compiler.compile_code(codegen.render(family, problem, config).code, arch)
            y = cupy.full((*problem.output_shape[:3], ldy), cupy.nan, dtype=problem.dtype)
            launch(load_function(binary, family.entry), family.launch(problem, config), x, w, b, y, problem,
                   ldx=ldx, ldy=ldy)
            ok, err = compare(cupy.asnumpy(y[..., :problem.C_out]), want, problem.dtype)
            assert ok, f"{family.name} {config}: worst error / tolerance = {err}"
            tried += 1
    assert tried


# The TF32 option: float32 1x1 problems that allow it, checked at TF32's tolerance, with and without
# the residual epilogue, on awkward sizes (C and C_out off every tile, pixels off every tile).
TF32 = [
    dict(op="pw", N=3, C=37, H=13, W=11, C_out=19, act="relu6", layout="nhwc"),
    dict(op="pw", N=2, C=576, H=7, W=7, C_out=160, act="none", bias=False, layout="nhwc"),
    dict(op="pw", N=1, C=16, H=15, W=17, C_out=96, act="relu", layout="nhwc"),
    dict(op="pw", N=3, C=37, H=13, W=11, C_out=19, act="relu6", layout="nchw"),
    dict(op="pw", N=2, C=96, H=9, W=7, C_out=24, act="none", layout="nchw"),
]


@pytest.mark.parametrize("problem", [Problem(**s, dtype="float32", tf32=True) for s in TF32], ids=lambda p: p.key)
def test_tf32_family_matches_reference(problem, arch):
    from autotune.kernels.pointwise import TF32_FAMILY as family
    from autotune.runner import ProblemData, load_function, verify
    data = ProblemData.create(problem, seed=hash(problem.key) % 1000)
    rng = random.Random(problem.key)
    valid = valid_configs(family, problem)
    configs = [family.default_config(problem), *rng.sample(valid, min(10, len(valid)))]
    for config in configs:
        binary = compiler.compile_code(codegen.render(family, problem, config).code, arch)
        ok, err = verify(load_function(binary, family.entry), family.launch(problem, config), data)
        assert ok, f"{family.name} {config}: worst error / tolerance = {err}"
    _check_residual_epilogue(problem, [(family, c) for c in configs[:3]], arch)


# The dense conv (a network's stem), fp16 NHWC only: odd sizes and stride 2, channel counts off every
# vector width, 5x5 and 7x7 windows, no padding; each run also with the input's pixels padded to 8
# channels (TensorRT's HWC8, ldx > C) holding large values that must not leak into the output.
CONV = [
    dict(op="conv", N=3, C=3, H=37, W=45, C_out=32, k=3, stride=2, act="relu6"),
    dict(op="conv", N=2, C=3, H=19, W=13, C_out=16, k=3, stride=1, act="none", bias=False),
    dict(op="conv", N=1, C=5, H=21, W=30, C_out=24, k=3, stride=2, act="relu"),
    dict(op="conv", N=2, C=1, H=17, W=23, C_out=32, k=7, stride=2, act="relu6"),
    dict(op="conv", N=1, C=2, H=9, W=40, C_out=64, k=3, stride=1, act="relu6", padding=0),
    dict(op="conv", N=2, C=2, H=12, W=11, C_out=8, k=5, stride=1, act="none"),
]


@pytest.mark.parametrize("problem", [Problem(**s, dtype="float16", layout="nhwc") for s in CONV], ids=lambda p: p.key)
def test_conv_matches_reference(problem, arch):
    import cupy
    import numpy as np
    from autotune.reference import compare, random_inputs, reference
    from autotune.runner import launch, load_function
    family = kernels.family_named("conv_nhwc_tc")
    assert family in kernels.families_for(problem, arch)
    host = random_inputs(problem, np.random.default_rng(11))
    want = reference(problem, **host)
    w = cupy.asarray(host["w"])
    b = cupy.asarray(host["bias"]) if host["bias"] is not None else None
    valid = valid_configs(family, problem)
    rng = random.Random(problem.key)
    configs = [family.default_config(problem), *rng.sample(valid, min(10, len(valid))),
               max(valid, key=lambda c: c["tile_h"] * c["tile_w"] / c["warps"])]
    for ldx in (problem.C, 8):
        x = cupy.full((*problem.input_shape[:3], ldx), 1000.0, dtype=problem.dtype)
        x[..., :problem.C] = cupy.asarray(host["x"])
        for config in configs:
            binary = compiler.compile_code(codegen.render(family, problem, config).code, arch)
            y = cupy.full(problem.output_shape, cupy.nan, dtype=problem.dtype)
            launch(load_function(binary, family.entry), family.launch(problem, config), x, w, b, y, problem, ldx=ldx)
            ok, err = compare(cupy.asnumpy(y), want, problem.dtype)
            assert ok, f"{family.name} {config} ldx={ldx}: worst error / tolerance = {err}"
