"""Fused-block families without a GPU: a spread of valid configurations renders and compiles for
sm_80 and sm_90 within the shared memory check() computed; defaults are valid; check() rejects
what it must."""
import functools
import random

import pytest

from autotune import codegen, compiler, kernels
from autotune.kernels import MAX_REGISTERS_PER_THREAD, fused
from autotune.problem import Problem
from autotune.searchspace import invalid_reason, valid_configs
from autotune.strategy import MAX_SPILL_BYTES

PROBLEMS = [
    Problem("dwpw", N=2, C=35, H=13, W=22, C_out=19, k=3, act="relu6", dtype="float16", layout="nhwc"),
    Problem("dwpw", N=1, C=96, H=29, W=30, C_out=24, k=5, stride=2, act="relu", act2="relu", dtype="float32", layout="nchw"),
    Problem("ir", N=2, C=24, H=28, W=28, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc"),
    Problem("ir", N=1, C=12, H=15, W=9, C_out=20, k=7, stride=2, expansion=4, act="relu6", bias=False,
            dtype="float32", layout="nhwc"),
    Problem("ir", N=1, C=160, H=7, W=7, C_out=320, k=3, expansion=6, act="relu6", dtype="float16", layout="nchw"),
    Problem("dwpw", N=2, C=32, H=30, W=29, C_out=16, k=3, act="relu6", dtype="float16", layout="nhwc"),
    Problem("dwpw", N=1, C=144, H=28, W=28, C_out=24, k=5, stride=2, act="relu6", bias=False, dtype="float16",
            layout="nhwc"),
    Problem("ir", N=2, C=24, H=20, W=18, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc"),
    Problem("ir", N=1, C=12, H=31, W=17, C_out=24, k=5, stride=2, expansion=4, act="relu", bias=False,
            dtype="float16", layout="nhwc"),
    Problem("pwdw", N=2, C=12, H=13, W=22, C_out=72, k=5, act="relu", bias=False, dtype="float16", layout="nhwc"),
    Problem("pwdw", N=16, C=160, H=7, W=7, C_out=960, k=3, act="relu6", dtype="float16", layout="nhwc"),
    Problem("pwdw", N=2, C=24, H=17, W=9, C_out=144, k=3, stride=2, act="relu6", dtype="float32", layout="nhwc"),
    Problem("pwdw", N=1, C=5, H=15, W=31, C_out=40, k=5, act="relu", bias=False, dtype="float16", layout="nchw"),
    Problem("pwdw", N=16, C=16, H=112, W=112, C_out=96, k=3, stride=2, act="relu6", dtype="float16", layout="nhwc"),
]
PER_PROBLEM = 3


@functools.lru_cache(maxsize=None)
def cases():
    rng = random.Random(0)
    out = []
    for p in PROBLEMS:
        for family in fused.FAMILIES:
            if family.applies(p):
                out.append((p, family, family.default_config(p)))
                out += [(p, family, c) for c in rng.sample(valid_configs(family, p), PER_PROBLEM)]
    return out


@functools.lru_cache(maxsize=None)
def compiled(arch):
    """Each case's binary for `arch`, or None where its family needs a newer arch (clusters: sm_90)."""
    todo = [(p, f, c) for p, f, c in cases() if kernels.supports(f, arch)]
    binaries = iter(compiler.compile_many([codegen.render(f, p, c).code for p, f, c in todo], arch, jobs=2))
    return [next(binaries) if kernels.supports(f, arch) else None for _, f, _ in cases()]


def test_both_families_and_both_ops_are_covered():
    names = {(p.op, f.name) for p, f, _ in cases()}
    assert names == {(op, f) for op in ("dwpw", "ir")
                     for f in ("fused_block", "fused_block_tc", "fused_block_tc_cluster")} | {
        ("pwdw", "fused_block"), ("pwdw", "fused_block_tc"), ("pwdw", "expand_depthwise_tc"), ("dwpw", "dwpw_stream_tc"), ("ir", "ir_stream_tc"), ("ir", "ir_tensor_dw"),
        ("ir", "ir_register_dw")}


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_valid_configurations_compile_within_their_resources(arch):
    assert sum(b is not None for b in compiled(arch)) == sum(kernels.supports(f, arch) for _, f, _ in cases())
    for (p, family, config), binary in zip(cases(), compiled(arch)):
        if binary is None:
            continue
        where = f"{p.key} {family.name} {config}"
        assert not isinstance(binary, Exception), f"{where}: {binary}"
        assert invalid_reason(family, p, config) is None
        assert binary.shared_bytes <= family.shared_bytes(p, config) + 16, where   # ptxas's count vs check()'s
        if family in (fused.EXPAND_DEPTHWISE, fused.IR_STREAM):    # (their estimates are bounds; the others' rough)
            assert binary.registers <= family.registers(p, config), where
        assert binary.registers <= MAX_REGISTERS_PER_THREAD
        if binary.registers >= MAX_REGISTERS_PER_THREAD:
            assert (binary.spill_bytes or 0) <= MAX_SPILL_BYTES, where


def test_rendered_source_bakes_in_the_block():
    p = PROBLEMS[2]
    code = codegen.render(fused.TENSOR_CORE, p, fused.TENSOR_CORE.default_config(p)).code
    assert "constexpr int EXPANSION = 6;" in code and "constexpr bool RESIDUAL = true;" in code
    assert "mma_16816" in code and "OUT_ACTIVATION = ACT_NONE" in code
    simt = codegen.render(fused.SIMT, PROBLEMS[1], fused.SIMT.default_config(PROBLEMS[1])).code
    assert "constexpr bool TENSOR_CORES = false;" in simt and "mma_16816" not in simt


def test_check_rejects_what_it_must():
    ir16 = PROBLEMS[2]
    tc, simt = fused.TENSOR_CORE, fused.SIMT
    ok = tc.default_config(ir16)
    assert tc.check(ir16, ok) is None
    assert "warps_m" in tc.check(ir16, {**ok, "tile": "2x8", "warps_m": 2})          # 16 pixels, 2 warps of 16
    assert "block_n" in tc.check(ir16, {**ok, "block_n": 16, "warps_n": 4})
    assert "shared memory" in simt.check(PROBLEMS[4].replace(dtype="float32", C=128), {
        "tile": "8x16", "kc": 64, "block_n": 256, "tm": 8, "tn": 8})
    assert "fused blocks" in tc.check(Problem("dw", 1, 8, 8, 8, k=3, dtype="float16"), ok)
    assert tc.check(PROBLEMS[1], tc.default_config(ir16)) is not None     # fp32: no tensor cores
    assert not tc.applies(PROBLEMS[1]) and simt.applies(PROBLEMS[1])
    assert "not among" in simt.check(PROBLEMS[1], {**simt.default_config(PROBLEMS[1]), "tm": 3})


def test_expand_depthwise_layout_and_launch():
    ed = fused.EXPAND_DEPTHWISE
    p = PROBLEMS[-1]                   # 112x112, stride 2: 56x56 outputs
    config = {"tile": "8x8", "block_n": 32, "warps": 4, "dw_vec": 8, "rows": 2, "hidden_float": 0}
    assert ed.check(p, config) is None
    launch = ed.launch(p, config)
    assert launch.grid == (7 * 7, 3, 16) and launch.block == (128, 1, 1)
    # x tile 17x17 -> 304 rows of 16 + 8 halves, expand weights 32 rows, hidden tile 304 x (32 + 8),
    # then 9 taps + 2 biases of 32 floats; the template asserts the same sum
    assert launch.shared_mem == ed.shared_bytes(p, config) == 2 * (304 * 24 + 32 * 24 + 304 * 40) + 4 * 32 * 11 + 4 * 10
    code = codegen.render(ed, p, config).code
    assert f"static_assert(SMEM_BYTES == {launch.shared_mem}" in code and "constexpr int C_IN = 16;" in code
    assert "shared memory" in ed.check(p.replace(C=160), {"tile": "16x16", "block_n": 128, "warps": 4, "dw_vec": 8, "rows": 2, "hidden_float": 0})
    assert "not among" in ed.check(p, {**config, "warps": 3})
    assert not ed.applies(p.replace(layout="nchw")) and not ed.applies(p.replace(dtype="float32"))
    assert not ed.applies(p.replace(C_out=100))           # 16-byte stores of the hidden channels
    assert not ed.applies(Problem("dwpw", 1, 8, 8, 8, C_out=16, k=3, dtype="float16", layout="nhwc"))
    assert kernels.families_for(p) == [ed]


def test_cluster_split_of_the_hidden_channels():
    cl = fused.CLUSTER
    deep = Problem("ir", N=16, C=96, H=14, W=14, C_out=96, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
    config = {"tile": "4x4", "kc": 32, "block_n": 64, "warps_m": 1, "warps_n": 4, "cluster_k": 4}
    assert cl.check(deep, config) is None
    assert cl.launch(deep, config).grid == (16 * 4, 2, 16)    # 16 tiles of 4x4 per image, 4 blocks each
    code = codegen.render(cl, deep, config).code
    assert "__cluster_dims__(CLUSTER_K, 1, 1)" in code and "constexpr int CLUSTER_K = 4;" in code
    plain = codegen.render(fused.TENSOR_CORE, deep, {k: v for k, v in config.items() if k != "cluster_k"}).code
    assert "__cluster_dims__" not in plain and "constexpr int CLUSTER_K = 1;" in plain
    # 18 chunks of 32 hidden channels over 8 blocks: shares of 3 leave two blocks idle
    assert "idle" in cl.check(deep, {**config, "cluster_k": 8})
    assert cl in kernels.families_for(deep, "sm_90") and cl not in kernels.families_for(deep, "sm_80")


def test_whole_block_families_need_act_zero_at_zero(monkeypatch):
    """The whole-block families expand padding pixels to act(0), which must be the depthwise's zero
    padding: they apply only to activations with act(0) == 0."""
    p = PROBLEMS[2]
    families = (fused.IR_STREAM, fused.IR_TENSOR_DW, fused.IR_REGISTER_DW)
    assert all(f.applies(p) for f in families)
    monkeypatch.setattr(fused, "_zero_at_zero", lambda act: act != p.act)
    assert not any(f.applies(p) for f in families)


def test_register_depthwise_tiles_cover_the_output():
    """ir_register_dw: a tile is the outputs whose 3x3 windows fit 16 input columns (14, or 7 at stride
    2); the grid has a block per tiles_per_block tiles of every image, and stride 2 needs an even out_h
    (two output rows of 8 slots make one m16 tile of the projection)."""
    f = fused.IR_REGISTER_DW
    for stride, seg in ((1, 14), (2, 7)):
        p = Problem("ir", N=3, C=16, H=29, W=31, C_out=24, k=3, stride=stride, expansion=6, act="relu6",
                    dtype="float16", layout="nhwc")
        assert f.applies(p) and f.seg_out(p) == seg
        config = {**f.default_config(p), "out_h": 4}
        tiles = -(-p.W_out // seg) * -(-p.H_out // 4) * p.N
        assert f.tiles(p, config) == tiles and f.launch(p, config).grid == (tiles, 1, 1)
        assert f.launch(p, {**config, "tiles_per_block": 2}).grid == (-(-tiles // 2), 1, 1)
        odd = f.check(p, {**config, "out_h": 1})
        assert (odd is None) == (stride == 1)
    assert not f.applies(Problem("ir", N=1, C=16, H=9, W=9, C_out=24, k=5, expansion=6, act="relu6",
                                 dtype="float16", layout="nhwc"))
