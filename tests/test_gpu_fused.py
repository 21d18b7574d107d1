"""Fused blocks (dwpw, ir) against the float64 reference of the whole block on a GPU: the default
configuration and a sample of valid tuned ones of every family, on awkward shapes (H != W, sizes
off every tile, batch 3, channel counts off the copy width and the 16-channel GEMM steps, stride 2
with odd sizes, expansion 1, residual and not, no bias)."""
import random

import pytest

from autotune import codegen, compiler, kernels
from autotune.kernels import fused
from autotune.problem import Problem
from autotune.searchspace import valid_configs
from test_gpu_kernels import _threads_per_channel, every_dtype_and_layout, every_parameter_value

pytestmark = pytest.mark.gpu

RANDOM_CONFIGS = 5
AWKWARD = [
    dict(op="dwpw", N=3, C=35, H=13, W=22, C_out=19, k=3, stride=1, act="relu6"),
    dict(op="dwpw", N=2, C=24, H=17, W=9, C_out=40, k=3, stride=2, act="relu", act2="relu"),
    dict(op="dwpw", N=1, C=16, H=15, W=31, C_out=24, k=5, stride=2, act2="relu6", bias=False),
    dict(op="ir", N=3, C=8, H=13, W=22, C_out=8, k=3, stride=1, expansion=6, act="relu6"),
    dict(op="ir", N=2, C=12, H=17, W=9, C_out=20, k=3, stride=2, expansion=6, act="relu6"),
    dict(op="ir", N=2, C=32, H=14, W=14, C_out=16, k=3, stride=1, expansion=1, act="relu6"),
    dict(op="ir", N=1, C=24, H=9, W=11, C_out=24, k=5, stride=1, expansion=4, act="relu6", bias=False),
    dict(op="ir", N=2, C=40, H=7, W=7, C_out=40, k=3, stride=1, expansion=6, act="relu6"),
]


@pytest.mark.parametrize("problem", every_dtype_and_layout(AWKWARD), ids=lambda p: p.key)
def test_fused_blocks_match_reference(problem, arch):
    from autotune.runner import ProblemData, load_function, verify
    assert problem.residual == (problem.op == "ir" and problem.stride == 1 and problem.C == problem.C_out)
    data = ProblemData.create(problem, seed=hash(problem.key) % 1000)
    rng = random.Random(problem.key)
    families = kernels.families_for(problem, arch)
    clusters = kernels.supports(fused.CLUSTER, arch) and problem.hidden >= 32       # two hidden chunks to share
    tensor_cores = {"fused_block_tc"} | ({"fused_block_tc_cluster"} if clusters else set())
    streams = {f.name for f in (fused.STREAM_PROJECT, fused.IR_STREAM, fused.IR_TENSOR_DW, fused.IR_REGISTER_DW)
               if f.applies(problem)}
    assert {f.name for f in families} == {"fused_block"} | (tensor_cores | streams if problem.dtype == "float16" else set())
    for family in families:
        valid = valid_configs(family, problem)
        configs = [family.default_config(problem), *rng.sample(valid, RANDOM_CONFIGS),
                   min(valid, key=_threads_per_channel(family, problem))]
        binaries = compiler.compile_many([codegen.render(family, problem, c).code for c in configs], arch)
        for config, binary in zip(configs, binaries):
            assert not isinstance(binary, Exception), f"{family.name} {config}: {binary}"
            fn = load_function(binary, family.entry)
            ok, err = verify(fn, family.launch(problem, config), data)
            assert ok, f"{family.name} {config}: worst error / tolerance = {err}"


# The fused expand + depthwise (pwdw): input channels off the 16-byte copy and the k16 steps, hidden
# channels off every block_n, sizes off every tile, stride 2 with odd sizes, k5, no bias, a deep 7x7.
PWDW = [
    dict(op="pwdw", N=3, C=12, H=13, W=22, C_out=72, k=3, stride=1, act="relu6"),
    dict(op="pwdw", N=2, C=24, H=17, W=9, C_out=144, k=3, stride=2, act="relu6"),
    dict(op="pwdw", N=1, C=5, H=15, W=31, C_out=40, k=5, stride=2, act="relu", bias=False),
    dict(op="pwdw", N=2, C=160, H=7, W=7, C_out=960, k=3, stride=1, act="relu6"),
]


# The streaming depthwise with its projection (dwpw_stream_tc): sizes off every tile and strip, batch 3,
# stride 2 with odd sizes, k5 and k7, no bias, act2, an inverted residual without expand, C_out off 16.
STREAM_PROJECT = [
    dict(op="dwpw", N=3, C=32, H=15, W=19, C_out=16, k=3, stride=1, act="relu6"),
    dict(op="dwpw", N=2, C=48, H=17, W=9, C_out=40, k=5, stride=2, act="relu", act2="relu6", bias=False),
    dict(op="dwpw", N=1, C=16, H=23, W=21, C_out=24, k=7, stride=1, act="relu6"),
    dict(op="dwpw", N=2, C=96, H=19, W=13, C_out=24, k=3, stride=2, act="relu6"),
    dict(op="ir", N=2, C=32, H=14, W=14, C_out=16, k=3, stride=1, expansion=1, act="relu6"),
]

# The streaming inverted residual (ir_stream_tc): input channels off the 16-byte copy and the k16 steps,
# sizes off every tile and strip, batch 3, stride 2 with odd sizes, k5, no bias, act2, a residual.
IR_STREAM = [
    dict(op="ir", N=3, C=16, H=13, W=22, C_out=24, k=3, stride=1, expansion=6, act="relu6"),
    dict(op="ir", N=2, C=24, H=17, W=9, C_out=24, k=3, stride=1, expansion=6, act="relu6"),
    dict(op="ir", N=2, C=8, H=15, W=19, C_out=16, k=3, stride=2, expansion=6, act="relu6"),
    dict(op="ir", N=1, C=12, H=11, W=13, C_out=24, k=5, stride=2, expansion=4, act="relu", bias=False),
    dict(op="ir", N=2, C=24, H=9, W=10, C_out=32, k=5, stride=1, expansion=4, act="relu6", act2="relu"),
]

# The inverted residual with its depthwise on tensor cores (ir_tensor_dw): the same, less the k5 stride-2
# block, whose 35-row input region for 16 output rows does not fit its shared memory.
IR_TENSOR_DW = [spec for spec in IR_STREAM if (spec["k"], spec["stride"]) != (5, 2)]

# The inverted residual with its expanded rows in registers (ir_register_dw, 3x3 only): IR_STREAM's 3x3
# blocks, and ReLU without bias at stride 2 with a width off the 7-column segments.
IR_REGISTER_DW = [spec for spec in IR_STREAM if spec["k"] == 3] + [
    dict(op="ir", N=2, C=16, H=9, W=30, C_out=16, k=3, stride=2, expansion=4, act="relu", bias=False)]

EVERY_VALUE = [(fused.EXPAND_DEPTHWISE, PWDW), (fused.STREAM_PROJECT, STREAM_PROJECT), (fused.IR_STREAM, IR_STREAM),
               (fused.IR_TENSOR_DW, IR_TENSOR_DW), (fused.IR_REGISTER_DW, IR_REGISTER_DW)]


@pytest.mark.parametrize("family, problem", [(f, Problem(**s, dtype="float16", layout="nhwc"))
                                             for f, specs in EVERY_VALUE for s in specs],
                         ids=lambda v: v.key if isinstance(v, Problem) else v.name)
def test_every_parameter_value_matches_reference(family, problem, arch):
    """The fp16 NHWC tensor-core families with dedicated problem lists: the default configuration and,
    for every value of every parameter, a configuration with it that fits."""
    from autotune.runner import ProblemData, load_function, verify
    assert family in kernels.families_for(problem, arch)
    data = ProblemData.create(problem, seed=hash(problem.key) % 1000)
    configs = every_parameter_value(family, problem, random.Random(problem.key))
    binaries = compiler.compile_many([codegen.render(family, problem, c).code for c in configs], arch)
    for config, binary in zip(configs, binaries):
        assert not isinstance(binary, Exception), f"{family.name} {config}: {binary}"
        ok, err = verify(load_function(binary, family.entry), family.launch(problem, config), data)
        assert ok, f"{family.name} {config}: worst error / tolerance = {err}"


def test_pwdw_problems_have_only_the_expand_depthwise_family(arch):
    for spec in PWDW:
        assert kernels.families_for(Problem(**spec, dtype="float16", layout="nhwc"), arch) == [fused.EXPAND_DEPTHWISE]


@pytest.mark.parametrize("problem", [Problem(**spec, dtype=dtype, layout=layout) for spec in PWDW[:3]
                                     for dtype, layout in (("float32", "nhwc"), ("float32", "nchw"), ("float16", "nchw"))],
                         ids=lambda p: p.key)
def test_pwdw_elsewhere_runs_on_the_fused_block_families(problem, arch):
    """fp32 and NCHW pwdw (the blocks' other depth-2 plan): fused_block without its projection, its
    blocks owning output (hidden) channels; the default and every parameter value."""
    from autotune.runner import ProblemData, load_function, verify
    families = kernels.families_for(problem, arch)
    assert {f.name for f in families} == {"fused_block"} | ({"fused_block_tc"} if problem.dtype == "float16" else set())
    data = ProblemData.create(problem, seed=hash(problem.key) % 1000)
    rng = random.Random(problem.key)
    for family in families:
        configs = every_parameter_value(family, problem, rng)
        binaries = compiler.compile_many([codegen.render(family, problem, c).code for c in configs], arch)
        for config, binary in zip(configs, binaries):
            assert not isinstance(binary, Exception), f"{family.name} {config}: {binary}"
            ok, err = verify(load_function(binary, family.entry), family.launch(problem, config), data)
            assert ok, f"{family.name} {config}: worst error / tolerance = {err}"
