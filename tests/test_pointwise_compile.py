"""Pointwise kernel families without a GPU: constraints, defaults, launch geometry, and NVRTC compiles of a
grid of configurations (every value of every parameter, both layouts, both dtypes, bias on and off, every
activation) for sm_80 and sm_90, checking that nothing spills and that ptxas stays within the registers and
shared memory check() assumed."""
import random
import re

import pytest

from autotune import codegen, compiler, kernels
from autotune.kernels.pointwise import (CLUSTER_FAMILY, FAMILIES, SIMT_FAMILY, STREAM_FAMILY, TC_FAMILY, TF32_FAMILY,
                                        WGMMA_FAMILY)
from autotune.problem import Problem
from autotune.searchspace import invalid_reason, valid_configs

ARCHS = ("sm_80", "sm_90")

# Big enough that every tile size is admissible, plus sizes that force narrower vectors.
GRID_PROBLEMS = [
    dict(N=2, C=160, H=20, W=20, C_out=160, dtype="float16", layout="nhwc", act="relu6", bias=True),
    dict(N=2, C=160, H=20, W=20, C_out=160, dtype="float16", layout="nchw", act="relu", bias=False),
    dict(N=2, C=160, H=20, W=20, C_out=160, dtype="float32", layout="nhwc", act="none", bias=True),
    dict(N=2, C=160, H=20, W=20, C_out=160, dtype="float32", layout="nchw", act="relu6", bias=False),
    dict(N=1, C=35, H=7, W=7, C_out=19, dtype="float16", layout="nhwc", act="relu", bias=True),     # vec 1
    dict(N=1, C=70, H=14, W=14, C_out=38, dtype="float16", layout="nchw", act="none", bias=True),   # vec 4 / 2
    dict(N=1, C=36, H=9, W=10, C_out=20, dtype="float32", layout="nhwc", act="relu6", bias=False),  # vec 4
    dict(N=3, C=18, H=5, W=5, C_out=6, dtype="float32", layout="nchw", act="relu", bias=True),      # vec 1 / 2
    dict(N=2, C=576, H=7, W=7, C_out=64, dtype="float16", layout="nhwc", act="none", bias=True),    # long K
]
# For the streaming family only: weights small enough to stay in shared memory, pixels enough for 16 tiles per block.
STREAM_PROBLEMS = [
    dict(N=8, C=64, H=64, W=64, C_out=48, dtype="float16", layout="nhwc", act="relu6", bias=True),
    dict(N=8, C=24, H=64, W=64, C_out=144, dtype="float16", layout="nhwc", act="none", bias=False),
    dict(N=2, C=36, H=32, W=32, C_out=22, dtype="float16", layout="nhwc", act="relu", bias=True),  # vec 4, vec_y 2
    dict(N=8, C=16, H=64, W=64, C_out=32, dtype="float16", layout="nhwc", act="relu6", bias=True),  # 256-pixel tiles fit
]
# For the wgmma family only (NHWC, C a multiple of 8): output channel counts that force narrower stores.
WGMMA_PROBLEMS = [
    dict(N=2, C=64, H=9, W=9, C_out=19, dtype="float16", layout="nhwc", act="relu", bias=False),    # vec_y 1
    dict(N=2, C=64, H=9, W=9, C_out=22, dtype="float16", layout="nhwc", act="none", bias=True),     # vec_y 2
    dict(N=1, C=200, H=11, W=5, C_out=20, dtype="float16", layout="nhwc", act="relu6", bias=True),  # vec_y 4
    dict(N=2, C=960, H=7, W=7, C_out=160, dtype="float16", layout="nhwc", act="none", bias=True),   # 12 stages
]
# Families for one layout only.
NHWC_ONLY = (STREAM_FAMILY, WGMMA_FAMILY)

# A spread of shapes for default_config() and launch(): odd channel counts, tiny images, batch 1.
SPREAD = [
    dict(N=1, C=1, H=1, W=1, C_out=1), dict(N=1, C=3, H=1, W=2, C_out=5), dict(N=7, C=13, H=3, W=3, C_out=29),
    dict(N=16, C=16, H=112, W=112, C_out=96), dict(N=16, C=144, H=56, W=56, C_out=24),
    dict(N=1, C=960, H=7, W=7, C_out=160), dict(N=16, C=320, H=7, W=7, C_out=1280),
    dict(N=2, C=35, H=13, W=22, C_out=19), dict(N=1, C=2, H=5, W=3, C_out=2048), dict(N=64, C=24, H=2, W=1, C_out=8),
]


def _spread():
    for spec in SPREAD:
        for dtype in ("float32", "float16"):
            for layout in ("nchw", "nhwc"):
                yield Problem(op="pw", dtype=dtype, layout=layout, **spec)


# The GEMM families built on the shared vector/resource model; the TF32 family (float32 problems that
# allow it) has its own tests in test_pointwise_tf32.py.
GEMM_FAMILIES = [f for f in FAMILIES if f is not TF32_FAMILY]


def _grid():
    """(family, problem, config) covering every value of every parameter (each on a rotating problem where
    it is valid), plus a couple of random valid configs per problem."""
    rng = random.Random(0)
    cases = []
    for family in GEMM_FAMILIES:
        specs = GRID_PROBLEMS + {STREAM_FAMILY: STREAM_PROBLEMS, WGMMA_FAMILY: WGMMA_PROBLEMS}.get(family, [])
        problems = [p for p in (Problem(op="pw", **spec) for spec in specs) if family.applies(p)]
        valid = {p: valid_configs(family, p) for p in problems}
        wanted = [(name, v) for name, values in family.space_values.items() for v in values]
        wanted += [(name, v) for name in ("vec_x", "vec_w", "vec_y") for v in (1, 2, 4, 8)]
        chosen = []
        for i, (name, value) in enumerate(wanted):
            for problem in problems[i % len(problems):] + problems[:i % len(problems)]:
                matching = [c for c in valid[problem] if c[name] == value]
                if matching:
                    chosen.append((problem, rng.choice(matching)))
                    break
        for problem in problems:
            chosen += [(problem, c) for c in rng.sample(valid[problem], 2)]
        for problem, config in chosen:
            if (family, problem, config) not in cases:
                cases.append((family, problem, config))
    return cases


GRID = _grid()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every grid case compiled for every arch its family supports (None for the others), into a private
    cache (module-scoped: set up before the per-test cache fixture runs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("pointwise-kernel-cache")))
        out = {}
        for arch in ARCHS:
            cases = [i for i, (f, p, c) in enumerate(GRID) if f in kernels.families_for(p, arch)]
            binaries = compiler.compile_many([codegen.render(*GRID[i]).code for i in cases], arch)
            out[arch] = [None] * len(GRID)
            for i, binary in zip(cases, binaries):
                out[arch][i] = binary
        return out


def test_grid_covers_every_parameter_value():
    for family in GEMM_FAMILIES:
        cases = [(p, c) for f, p, c in GRID if f is family]
        for name, values in family.space_values.items():
            seen = {c[name] for _, c in cases}
            assert set(values) <= seen, f"{family.name}.{name}: {sorted(set(values) - seen)} never compiled"
        widths = {c[v] for _, c in cases for v in ("vec_x", "vec_w", "vec_y")}
        assert widths == {1, 2, 4, 8}, widths
        assert {p.layout for p, _ in cases} == ({"nhwc"} if family in NHWC_ONLY else {"nchw", "nhwc"})
        assert {p.act for p, _ in cases} == {"none", "relu", "relu6"}
        assert {p.bias for p, _ in cases} == {True, False}
        assert {p.dtype for p, _ in cases} == ({"float32", "float16"} if family is SIMT_FAMILY else {"float16"})


@pytest.mark.parametrize("arch", ARCHS)
def test_grid_compiles_within_estimates(compiled, arch):
    failures = []
    assert sum(b is not None for b in compiled[arch]) == sum(kernels.supports(f, arch) for f, _, _ in GRID)
    for (family, problem, config), binary in zip(GRID, compiled[arch]):
        if binary is None:
            continue
        where = f"{family.name} {problem.key} {config}"
        if isinstance(binary, Exception):
            failures.append(f"{where}: compile error {binary}")
            continue
        stack = re.search(r"(\d+) bytes stack frame", binary.log)
        if binary.spill_bytes or (stack and int(stack.group(1))):
            failures.append(f"{where}: spills {binary.spill_bytes} bytes, stack frame {stack.group(1)}")
        if binary.registers > family.registers(problem, config):
            failures.append(f"{where}: {binary.registers} registers > estimate {family.registers(problem, config)}")
        # Static shared memory as counted; a family that sizes it at launch (dynamic) declares none.
        static = 0 if family.launch(problem, config).shared_mem else family.shared_bytes(problem, config)
        if binary.shared_bytes != static:
            failures.append(f"{where}: {binary.shared_bytes} bytes shared != {static}")
    assert not failures, f"{len(failures)} of {len(GRID)}:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("problem", list(_spread()), ids=lambda p: p.key)
def test_default_config_is_valid(problem):
    for family in kernels.families_for(problem):
        if family not in FAMILIES:
            continue
        config = family.default_config(problem)
        assert family.check(problem, config) is None
        assert invalid_reason(family, problem, config) is None     # and inside space()
        launch = family.launch(problem, config)
        dynamic = family.shared_bytes(problem, config) if family is WGMMA_FAMILY else 0
        assert 32 <= launch.threads <= 1024 and launch.shared_mem == dynamic
        rows = problem.N * problem.H * problem.W if problem.layout == "nhwc" else problem.H * problem.W
        gx, gy, gz = launch.grid
        if family is WGMMA_FAMILY:         # one linear grid of (pixel tile, channel tile)
            assert (gy, gz) == (1, 1) and gx == -(-rows // config["block_m"]) * -(-problem.C_out // config["block_n"])
            continue
        if family is STREAM_FAMILY:        # each block streams up to `tiles` pixel tiles, all channels
            tiles = -(-rows // config["block_m"])
            assert (gy, gz) == (1, 1) and gx * config["tiles"] >= tiles > (gx - 1) * config["tiles"]
            continue
        cluster = config.get("cluster_k", 1)       # a cluster's blocks are consecutive along x, one tile
        assert gx % cluster == 0
        gx //= cluster
        assert gx * config["block_m"] >= rows > (gx - 1) * config["block_m"]
        assert gy * config["block_n"] >= problem.C_out > (gy - 1) * config["block_n"]
        assert gz == (problem.N if problem.layout == "nchw" else 1) and gy <= 65535 and gz <= 65535


def test_applies():
    pw16 = Problem(op="pw", N=1, C=8, H=4, W=4, C_out=8, dtype="float16")
    pw32 = pw16.replace(dtype="float32")
    dw = Problem(op="dw", N=1, C=8, H=4, W=4, k=3)
    assert SIMT_FAMILY.applies(pw16) and SIMT_FAMILY.applies(pw32) and not SIMT_FAMILY.applies(dw)
    assert TC_FAMILY.applies(pw16) and not TC_FAMILY.applies(pw32) and not TC_FAMILY.applies(dw)
    assert TC_FAMILY.check(pw32, TC_FAMILY.default_config(pw16)) is not None
    assert {f.name for f in FAMILIES} == {"pointwise", "pointwise_tc", "pointwise_tc_cluster", "pointwise_tc_stream",
                                          "pointwise_tf32", "pointwise_wgmma"}
    # streaming: fp16 NHWC, and only while the weights fit in shared memory beside a tile ring
    nhwc = pw16.replace(layout="nhwc")
    assert STREAM_FAMILY.applies(nhwc) and not STREAM_FAMILY.applies(pw16.replace(layout="nchw"))
    assert not STREAM_FAMILY.applies(nhwc.replace(dtype="float32"))
    assert STREAM_FAMILY.applies(nhwc.replace(C=192, C_out=32)) and not STREAM_FAMILY.applies(nhwc.replace(C=384, C_out=64))
    assert STREAM_FAMILY.exact_channels and not getattr(TC_FAMILY, "exact_channels", False)
    # clusters: sm_90 and newer, and a K of at least two k16 slices to share
    wide = pw16.replace(C=64)
    assert CLUSTER_FAMILY.applies(wide) and not CLUSTER_FAMILY.applies(pw16) and not CLUSTER_FAMILY.applies(pw32)
    assert CLUSTER_FAMILY in kernels.families_for(wide, "sm_90") and CLUSTER_FAMILY in kernels.families_for(wide)
    assert CLUSTER_FAMILY not in kernels.families_for(wide, "sm_80")
    assert TC_FAMILY in kernels.families_for(wide, "compute_80")
    # wgmma: fp16 NHWC with C a multiple of 8 (16-byte operand chunks), sm_90 alone (compiled for sm_90a)
    wide_nhwc = wide.replace(layout="nhwc")
    assert WGMMA_FAMILY.applies(wide_nhwc) and not WGMMA_FAMILY.applies(wide) and not WGMMA_FAMILY.applies(pw32)
    assert not WGMMA_FAMILY.applies(wide_nhwc.replace(C=36))
    assert [WGMMA_FAMILY in kernels.families_for(wide_nhwc, a) for a in ("sm_80", "sm_90", "sm_100")] == [False, True, False]


def test_wgmma_constraints():
    p = Problem(op="pw", N=16, C=960, H=7, W=7, C_out=320, dtype="float16", layout="nhwc")
    ok = dict(block_m=64, block_n=32, block_k=64, warpgroups_n=1, stages=6, cluster_k=1, vec_x=8, vec_w=8, vec_y=8)
    assert WGMMA_FAMILY.check(p, ok) is None
    launch = WGMMA_FAMILY.launch(p, ok)
    assert launch.grid == (13 * 10, 1, 1) and launch.threads == 128
    assert launch.shared_mem == 6 * (64 + 32) * 128 + 1024 > kernels.MAX_SHARED_BYTES     # ring + atom slack
    # past the 227 KB an sm_90 block may opt in to: 12 stages of (128 + 128) rows of 128 bytes
    assert "shared memory" in WGMMA_FAMILY.check(p, {**ok, "block_m": 128, "block_n": 128, "warpgroups_n": 2, "stages": 12})
    assert "16-byte chunks" in WGMMA_FAMILY.check(p, {**ok, "vec_x": 4})
    assert WGMMA_FAMILY.check(p, {**ok, "block_n": 48, "warpgroups_n": 2}) is None                # m64n24 each
    assert "n of 8" in WGMMA_FAMILY.check(p, {**ok, "block_n": 256, "warpgroups_n": 1})          # 128 accumulators
    assert "pruned" in WGMMA_FAMILY.check(p.replace(C=128), {**ok, "stages": 4})                  # 2 K slices
    assert WGMMA_FAMILY.check(p.replace(C=64), {**ok, "stages": 3}) is None                       # the shallowest ring
    # clusters: K split over the blocks of one tile; a cluster's blocks are consecutive along x
    split = {**ok, "cluster_k": 4, "stages": 4}
    assert WGMMA_FAMILY.check(p, split) is None and WGMMA_FAMILY.launch(p, split).grid == (4 * 13 * 10, 1, 1)
    assert "K slices per block" in WGMMA_FAMILY.check(p, {**split, "stages": 6})                  # 4 slices each
    assert "idle" in WGMMA_FAMILY.check(p.replace(C=320), split)                                   # 5 slices: 2, 2, 1, -


def test_cluster_constraints():
    p = Problem(op="pw", N=16, C=960, H=7, W=7, C_out=320, dtype="float16", layout="nhwc")
    config = {**TC_FAMILY.default_config(p), "block_m": 64, "block_n": 32, "block_k": 64, "warps_m": 2,
              "warps_n": 1, "stages": 2, "split_k": 1, "cluster_k": 4}
    assert CLUSTER_FAMILY.check(p, config) is None
    grid = CLUSTER_FAMILY.launch(p, config).grid
    assert grid == (4 * 13, 10, 1)            # 13 pixel tiles, each 4 blocks of one cluster
    assert CLUSTER_FAMILY.check(p, {**config, "cluster_k": 8}) is None   # 15 K slices: 7 shares of 2, one of 1
    assert "K slices per block" in CLUSTER_FAMILY.check(p, {**config, "block_m": 32, "cluster_k": 8, "stages": 4})
    # 5 K slices over 4 blocks: shares of 2 leave the fourth block idle
    assert "idle" in CLUSTER_FAMILY.check(p.replace(C=320), config)
    assert "idle" in CLUSTER_FAMILY.check(p.replace(C=64), {**config, "block_k": 32})
    # the partial tile (floats) must fit: 256 x (128 + 4) x 4 bytes does not
    big = {**config, "block_m": 256, "block_n": 128, "block_k": 16, "warps_m": 4, "warps_n": 2, "cluster_k": 2}
    assert "shared memory" in CLUSTER_FAMILY.check(p, big)
    assert {f.entry for f in FAMILIES} == {"pw_conv2d"}


BIG16 = Problem(op="pw", N=16, C=320, H=28, W=28, C_out=320, dtype="float16", layout="nhwc")
TC_OK = dict(block_m=64, block_n=64, block_k=32, warps_m=2, warps_n=2, stages=2, vec_x=8, vec_w=8, vec_y=8)
SIMT_OK = dict(block_m=64, block_n=64, block_k=16, thread_m=4, thread_n=4, stages=2, vec_x=8, vec_w=8, vec_y=8)


@pytest.mark.parametrize("family, problem, changes, why", [
    (TC_FAMILY, BIG16, {}, None),
    (SIMT_FAMILY, BIG16, {}, None),
    # shared memory
    (TC_FAMILY, BIG16, dict(block_m=256, block_n=128, block_k=64, warps_m=4, warps_n=4, stages=4), "shared"),
    (SIMT_FAMILY, BIG16, dict(block_m=128, block_n=128, block_k=32, thread_m=8, thread_n=8), "shared"),
    # threads
    (SIMT_FAMILY, BIG16, dict(block_m=128, block_n=128, thread_m=2, thread_n=2), "threads"),
    (SIMT_FAMILY, BIG16, dict(block_m=16, block_n=16, thread_m=8, thread_n=8), "threads"),
    # registers
    (TC_FAMILY, BIG16, dict(block_m=256, block_n=64, block_k=16, warps_m=1, warps_n=1, stages=1), "registers"),
    (TC_FAMILY, BIG16, dict(block_m=128, block_n=128, block_k=16, warps_m=1, warps_n=2, stages=1), "registers"),
    # warp tiles must be whole mma tiles
    (TC_FAMILY, BIG16, dict(block_m=16, warps_m=2), "m16"),
    (TC_FAMILY, BIG16, dict(block_n=48, warps_n=4), "n8"),
    # too many register-staged loads per thread
    (SIMT_FAMILY, BIG16, dict(block_m=128, block_n=16, block_k=32, thread_m=8, thread_n=8, vec_x=1), "loads"),
    # vector widths: alignment of the sizes they step along, and 16 bytes at most
    (TC_FAMILY, BIG16.replace(C=36), dict(vec_x=4, vec_w=4), None),
    (TC_FAMILY, BIG16.replace(C=36), {}, "vec_x=8 does not divide 36"),
    (TC_FAMILY, BIG16.replace(C=36), dict(vec_x=4), "vec_w=8 does not divide 36"),
    (TC_FAMILY, BIG16.replace(C_out=20), {}, "vec_y=8 does not divide 20"),
    (TC_FAMILY, BIG16.replace(layout="nchw", H=7, W=7), dict(vec_y=1), "vec_x=8 does not divide 49"),
    (TC_FAMILY, BIG16.replace(layout="nchw", H=7, W=7), dict(vec_x=1), "vec_y=8 does not divide 49"),
    (TC_FAMILY, BIG16.replace(layout="nchw", C_out=20, H=7, W=8), dict(block_n=32), None),  # stores step along H*W
    (SIMT_FAMILY, BIG16.replace(dtype="float32"), {}, "vector widths"),
    (SIMT_FAMILY, BIG16.replace(dtype="float32", C=6), dict(block_k=8, stages=1, vec_x=2, vec_w=2, vec_y=4), None),
    (SIMT_FAMILY, BIG16.replace(dtype="float32", C=6), dict(vec_x=4, vec_w=2, vec_y=4), "vec_x=4 does not divide 6"),
    # values outside the space, unknown and missing parameters
    (TC_FAMILY, BIG16, dict(block_k=8), "block_k=8 is not one of"),
    (TC_FAMILY, BIG16, dict(thread_m=4), "unknown"),
    (SIMT_FAMILY, BIG16, dict(vec_y=None), "vec_y"),
    # pruning: tiles far beyond the problem, pipelines deeper than the K loop
    (TC_FAMILY, BIG16.replace(C_out=24), dict(block_n=64, warps_n=1), "pruned"),
    (TC_FAMILY, BIG16.replace(C=24), dict(block_k=64, stages=1), "pruned"),
    (TC_FAMILY, BIG16.replace(C=24), dict(block_k=16, stages=2), None),
    (TC_FAMILY, BIG16.replace(C=24), dict(block_k=16, stages=3), "pruned"),
    (TC_FAMILY, BIG16.replace(C=24), dict(block_k=32, stages=2), "pruned"),
    (SIMT_FAMILY, BIG16.replace(N=1, H=3, W=3), dict(block_m=64), "pruned"),
])
def test_check(family, problem, changes, why):
    base = TC_OK if family is TC_FAMILY else SIMT_OK
    config = {**base, **changes}
    config = {k: v for k, v in config.items() if v is not None}
    reason = family.check(problem, config)
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason, reason


class _Size:
    """An integer that only supports +, * and //, to show that launch() stays symbolic-friendly."""

    def __init__(self, v):
        self.v = v

    def _wrap(self, other, op):
        o = other.v if isinstance(other, _Size) else other
        assert isinstance(o, int)
        return _Size(op(self.v, o))

    __add__ = __radd__ = lambda s, o: s._wrap(o, lambda a, b: a + b)
    __mul__ = __rmul__ = lambda s, o: s._wrap(o, lambda a, b: a * b)
    __floordiv__ = lambda s, o: s._wrap(o, lambda a, b: a // b)
    __sub__ = lambda s, o: s._wrap(o, lambda a, b: a - b)   # used by ceil_div's "- 1" on a literal only


def test_launch_uses_only_arithmetic():
    for layout in ("nchw", "nhwc"):
        p = BIG16.replace(layout=layout, C=64, C_out=100, H=9, W=11)
        assert STREAM_FAMILY in kernels.families_for(p) or layout == "nchw"
        for family in kernels.families_for(p):
            config = family.default_config(p)
            real = family.launch(p, config)

            class Sym:
                N, C, H, W, C_out = (_Size(v) for v in (p.N, p.C, p.H, p.W, p.C_out))
                layout, dtype, itemsize = p.layout, p.dtype, p.itemsize

            sym = family.launch(Sym, config)
            grid = tuple(g.v if isinstance(g, _Size) else g for g in sym.grid)
            assert grid == real.grid and sym.block == real.block


RESIDUAL_PROBLEMS = [Problem(op="pw", N=2, C=96, H=14, W=14, C_out=24, dtype=dtype, layout=layout, act="none")
                     for dtype in ("float16", "float32") for layout in ("nhwc", "nchw")]
RESIDUAL_PROBLEMS.append(RESIDUAL_PROBLEMS[2].replace(tf32=True))     # float32 NHWC: the TF32 family too


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_epilogue_compiles(arch, tmp_path, monkeypatch):
    """Every pointwise family renders and compiles with the residual epilogue (a 14th argument), without
    spilling; the plain kernel keeps the 13-argument signature the exporters rely on."""
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path))
    cases = [(f, p, c) for p in RESIDUAL_PROBLEMS for f in kernels.families_for(p, arch)
             for c in (f.default_config(p), *random.Random(p.key).sample(valid_configs(f, p), 2))]
    assert {f.name for f, _, _ in cases} == {f.name for f in FAMILIES if kernels.supports(f, arch)}
    codes = [codegen.render(f, p, c, add_residual=True).code for f, p, c in cases]
    for (f, p, c), code in zip(cases, codes):
        assert "const T* __restrict__ residual)" in code and "residual)" not in codegen.render(f, p, c).code
    for (f, p, c), binary in zip(cases, compiler.compile_many(codes, arch)):
        assert not isinstance(binary, Exception), f"{f.name} {p.key} {c}: {binary}"
        assert binary.spill_bytes == 0, f"{f.name} {p.key} {c}: spills {binary.spill_bytes} bytes"


def test_residual_epilogue_only_where_a_family_has_one():
    from autotune.kernels import depthwise
    dw = Problem(op="dw", N=1, C=8, H=4, W=4, k=3)
    with pytest.raises(ValueError, match="no residual epilogue"):
        codegen.render(depthwise.NHWC, dw, depthwise.NHWC.default_config(dw), add_residual=True)
