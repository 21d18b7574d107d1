"""Depthwise families without a GPU: every configuration check() lets through renders, compiles for
sm_80 and sm_90, and fits the hardware the way check() promised (registers, spills, shared memory);
default configurations are valid; check() rejects what it must."""
import functools
import itertools
import random

import pytest

from autotune import codegen, compiler
from autotune.kernels import MAX_REGISTERS_PER_THREAD, MAX_SHARED_BYTES, depthwise
from autotune.problem import Problem
from autotune.strategy import MAX_SPILL_BYTES
from autotune.searchspace import config_key, invalid_reason, valid_configs

FAMILIES = [depthwise.NHWC, depthwise.NCHW]   # CUDA-core families; the tensor-core one: test_depthwise_tc_compile.py
ARCHS = ("sm_80", "sm_90")
ACTS = ("none", "relu", "relu6")
RANDOM_PER_PROBLEM = 3


def _grid_problems(layout):
    """k 3/5/7 x stride 1/2 x both dtypes, bias and activation cycling; sizes large enough for every
    tile and channel block to be valid, odd and H != W for some, W a multiple of 8 for others (NCHW
    vector loads need W % vec == 0)."""
    cycle = itertools.cycle(itertools.product((True, False), ACTS))
    for i, (k, stride, dtype) in enumerate(itertools.product((3, 5, 7), (1, 2), ("float32", "float16"))):
        bias, act = next(cycle)
        shape = (i + i // 2) % 2                 # both shapes for each dtype and each stride
        H, W = ((29, 48), (30, 45))[shape] if stride == 1 else ((61, 96), (57, 67))[shape]
        yield Problem("dw", N=2, C=96 if i % 3 else 40, H=H, W=W, k=k, stride=stride, bias=bias,
                      act=act, dtype=dtype, layout=layout)


def _work(cfg):
    """How heavy a thread is: outputs x vector width (and window), then block size."""
    return cfg["out_h"] * cfg["out_w"] * cfg["vec"], cfg["tile_h"] * cfg["tile_w"] * cfg["ch_per_block"]


@functools.lru_cache(maxsize=None)
def grid(family_name):
    """[(problem, config)]: per problem, the heaviest valid configuration, the valid configuration
    with the most threads among the heaviest half, a few at random, and configurations chosen
    greedily until, across the problems, every value of every parameter of the space has appeared
    at least once."""
    family = {f.name: f for f in FAMILIES}[family_name]
    rng = random.Random(family_name)
    covered = set()
    cases = []
    for problem in _grid_problems(family.layout):
        space = family.space(problem)
        uncovered = {(name, value) for name, values in space.items() for value in values} - covered
        valid = valid_configs(family, problem)
        assert valid, f"{family.name}: no valid configuration for {problem.key}"
        rng.shuffle(valid)
        chosen = [max(valid, key=_work)]
        heavy = sorted(valid, key=lambda c: _work(c)[0])[len(valid) // 2:]
        chosen.append(max(heavy, key=lambda c: (family.launch(problem, c).threads, _work(c))))
        chosen += valid[:RANDOM_PER_PROBLEM]
        for c in chosen:
            uncovered -= set(c.items())
        while True:
            best = max(valid, key=lambda c: len(uncovered & set(c.items())))
            if not uncovered & set(best.items()):
                break
            chosen.append(best)
            uncovered -= set(best.items())
        covered |= {item for c in chosen for item in c.items()}
        seen = set()
        for c in chosen:
            if config_key(c) not in seen:
                seen.add(config_key(c))
                cases.append((problem, c))
    return cases


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_grid_is_representative(family):
    cases = grid(family.name)
    problems = {p for p, _ in cases}
    assert {(p.k, p.stride, p.dtype) for p in problems} == set(
        itertools.product((3, 5, 7), (1, 2), ("float32", "float16")))
    assert {p.bias for p in problems} == {True, False}
    assert {p.act for p in problems} == set(ACTS)
    for p, c in cases:
        assert invalid_reason(family, p, c) is None
    # Every value of every parameter that some problem's space offers (vector widths vary with dtype and C).
    offered = {}
    for p in problems:
        for name, values in family.space(p).items():
            offered.setdefault(name, set()).update(values)
    for name, values in offered.items():
        used = {c[name] for _, c in cases}
        assert used == values, f"{name}: {sorted(values - used, key=str)} never tried"


@functools.lru_cache(maxsize=None)
def compiled(family_name, arch):
    family = {f.name: f for f in FAMILIES}[family_name]
    cases = grid(family_name)
    sources = [codegen.render(family, p, c) for p, c in cases]
    assert all(s.entry == family.entry and 'extern "C"' in s.code for s in sources)
    return list(zip(cases, compiler.compile_many([s.code for s in sources], arch, jobs=2)))


def _describe(problem, config, binary=None):
    text = f"{problem.key} {config_key(config)}"
    if binary is not None:
        text += f" -> {binary.registers} registers, {binary.spill_bytes} bytes spilled"
    return text


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_valid_configs_compile_within_limits(family, arch):
    results = compiled(family.name, arch)
    errors = [f"{_describe(p, c)}: {b}" for (p, c), b in results if isinstance(b, Exception)]
    assert not errors, "\n".join(errors)
    for (problem, config), binary in results:
        assert binary.arch == arch and binary.image[:4] == b"\x7fELF"
        assert f"for '{arch}'" in binary.log
        assert binary.registers is not None and binary.registers <= MAX_REGISTERS_PER_THREAD, \
            _describe(problem, config, binary)
        # Static shared memory as ptxas counts it stays within what check() allows.
        assert binary.shared_bytes <= MAX_SHARED_BYTES, _describe(problem, config, binary)
        threads = family.launch(problem, config).threads
        assert binary.registers * threads <= 65536, _describe(problem, config, binary)


def _register_limit(threads):
    """The most registers a thread may use with __launch_bounds__(threads) (one block per SM):
    65536 per SM, allocated in multiples of 8, at most 255."""
    return min(MAX_REGISTERS_PER_THREAD, 65536 // (-(-threads // 32) * 32) // 8 * 8)


def _spills(family, results):
    """(at the limit, below it): spilling configurations where ptxas used every register the launch
    bounds allow - check()'s register estimate was too low - and where it chose fewer."""
    at, below = [], []
    for (p, c), b in results:
        # A few spilled bytes are tolerated (and timed); more are caught after compiling.
        if not isinstance(b, Exception) and (b.spill_bytes or 0) > MAX_SPILL_BYTES:
            limit = _register_limit(family.launch(p, c).threads)
            (at if b.registers >= limit else below).append(_describe(p, c, b) + f" (limit {limit})")
    return at, below


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_no_spill_at_the_register_limit(family, arch):
    """No configuration check() accepts runs out of registers and spills."""
    results = compiled(family.name, arch)
    at, _ = _spills(family, results)
    assert not at, f"{len(at)} of {len(results)} spill at the register limit:\n" + "\n".join(at)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_no_spill_at_all(family):
    """Every configuration check() accepts compiles without spilling, on either arch."""
    failures = []
    for arch in ARCHS:
        results = compiled(family.name, arch)
        at, below = _spills(family, results)
        failures += [f"{arch}: {s}" for s in at + below]
    assert not failures, f"{len(failures)} spill:\n" + "\n".join(failures)


def _cfg(vec, cpb, tile_h, tile_w, out_h, out_w, stage, unroll, layout="nhwc"):
    cfg = dict(vec=vec, ch_per_block=cpb, tile_h=tile_h, tile_w=tile_w, out_h=out_h, out_w=out_w,
               stage_input=stage, unroll_rows=unroll)
    return dict(cfg, adjacent_cols=False) if layout == "nhwc" else cfg


FORMER_SPILLS = [   # (cause, family, problem, config): configurations that once spilled
    ("A", depthwise.NCHW, dict(k=5, C=96, H=56, W=56), _cfg(4, 16, 16, 32, 2, 8, True, False, "nchw")),   # 512 threads, 40 registers
    ("A", depthwise.NCHW, dict(k=7, C=40, H=30, W=45), _cfg(1, 16, 16, 32, 4, 8, False, True, "nchw")),   # 256 threads, 128 registers
    ("A", depthwise.NHWC, dict(k=3, C=96, H=30, W=45), _cfg(1, 32, 16, 16, 8, 1, True, False)),   # 1024 threads, 32 registers
    ("B", depthwise.NHWC, dict(k=5, stride=2, C=96, H=61, W=96), _cfg(8, 16, 16, 8, 4, 1, False, True)),  # 255 registers
    ("B", depthwise.NHWC, dict(k=7, C=40, H=30, W=45), _cfg(2, 64, 16, 8, 8, 1, False, True)),    # 512 threads, 128 registers
]


@pytest.mark.parametrize("cause,family,size,config", FORMER_SPILLS,
                         ids=[f"{c}-{f.name}-{i}" for i, (c, f, _, _) in enumerate(FORMER_SPILLS)])
def test_former_spilling_configs(cause, family, size, config):
    """Each is now either rejected by check() or compiles without spilling."""
    problem = Problem("dw", N=2, dtype="float16", layout=family.layout, **size)
    if family.check(problem, config) is not None:
        return                          # fixed by check() rejecting it
    source = codegen.render(family, problem, config).code
    for arch in ARCHS:
        binary = compiler.compile_code(source, arch)
        assert binary.spill_bytes <= MAX_SPILL_BYTES, _describe(problem, config, binary)


# ---- default configurations -------------------------------------------------------------------
SPREAD = {                                       # awkward sizes a default configuration must handle
    "C1-56x56": dict(N=1, C=1, H=56, W=56),      # one channel
    "C35-17x9": dict(N=3, C=35, H=17, W=9),      # odd C, H != W
    "C7-1x1": dict(N=1, C=7, H=1, W=1),          # 1x1 image
    "C3-1x5": dict(N=1, C=3, H=1, W=5),
    "C16-2x2": dict(N=1, C=16, H=2, W=2),
    "C16-14x14": dict(N=1, C=16, H=14, W=14),
    "C960-7x7": dict(N=4, C=960, H=7, W=7),      # MobileNet's last depthwise layers
    "C32-112x112": dict(N=16, C=32, H=112, W=112),
    "C24-4096x4096": dict(N=1, C=24, H=4096, W=4096),   # huge image
    "C8-65536x3": dict(N=1, C=8, H=65536, W=3),  # huge H, narrow W
}

def _spread_cases():
    for family in FAMILIES:
        for name in SPREAD:
            yield pytest.param(family, name, id=f"{family.name}-{name}")


def _spread_problems(family, name):
    for k, stride, dtype in itertools.product((3, 5, 7), (1, 2), ("float32", "float16")):
        yield Problem("dw", k=k, stride=stride, dtype=dtype, layout=family.layout, **SPREAD[name])


@pytest.mark.parametrize("family,name", list(_spread_cases()))
def test_default_config_is_valid(family, name):
    failures = []
    for problem in _spread_problems(family, name):
        assert family.applies(problem)
        reason = invalid_reason(family, problem, family.default_config(problem))
        if reason:
            failures.append(f"{problem.key}: {reason}")
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures)


@pytest.mark.parametrize("family,name", list(_spread_cases()))
def test_search_space_is_not_empty(family, name):
    empty = [p.key for p in _spread_problems(family, name) if not valid_configs(family, p)]
    assert not empty, f"{len(empty)} problems with no valid configuration:\n" + "\n".join(empty)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_default_config_compiles_without_spills(family, arch):
    problems = [Problem("dw", N=2, C=32, H=20, W=36, k=k, stride=s, act=act, bias=b, dtype=dt,
                        layout=family.layout)
                for (k, s, dt), (b, act) in zip(itertools.product((3, 5, 7), (1, 2), ("float32", "float16")),
                                                itertools.cycle(itertools.product((True, False), ACTS)))]
    sources = [codegen.render(family, p, family.default_config(p)).code for p in problems]
    for p, b in zip(problems, compiler.compile_many(sources, arch, jobs=2)):
        assert not isinstance(b, Exception), f"{p.key}: {b}"
        assert b.spill_bytes == 0 and b.registers <= MAX_REGISTERS_PER_THREAD, \
            _describe(p, family.default_config(p), b)


# ---- check() rejects ---------------------------------------------------------------------------
def _base(layout, **kw):
    spec = dict(op="dw", N=2, C=96, H=56, W=56, k=3, dtype="float16", layout=layout)
    spec.update(kw)
    return Problem(**spec)


NHWC_OK = dict(vec=4, ch_per_block=32, tile_h=4, tile_w=8, out_h=1, out_w=1, adjacent_cols=False,
               stage_input=False, unroll_rows=True)
NCHW_OK = dict(ch_per_block=2, tile_h=8, tile_w=32, out_h=2, out_w=2, vec=1, stage_input=False,
               unroll_rows=True)


def test_base_configs_are_valid():
    assert invalid_reason(depthwise.NHWC, _base("nhwc"), NHWC_OK) is None
    assert invalid_reason(depthwise.NCHW, _base("nchw"), NCHW_OK) is None
    assert depthwise.NHWC.check(_base("nhwc", C=96), dict(NHWC_OK, vec=8, ch_per_block=8, tile_w=32)) is None


@pytest.mark.parametrize("problem_kw,change,words", [
    (dict(C=36), dict(vec=8), "vec=8 does not divide C=36"),
    (dict(C=30, dtype="float32"), dict(vec=4), "vec=4 does not divide C=30"),
    (dict(C=35), dict(vec=2), "does not divide"),
    (dict(), dict(vec=8, ch_per_block=12), "multiple of vec"),       # 12 is off the space too
    (dict(), dict(vec=4, ch_per_block=6), "multiple of vec"),
    (dict(C=8), dict(ch_per_block=64), "larger than the channel count"),
    (dict(H=6, W=6), dict(tile_h=16), "tile larger than the output"),
    (dict(), dict(tile_h=4, out_h=8), "tile not divisible"),
    (dict(), dict(tile_w=2, out_w=4), "tile not divisible"),
    (dict(), dict(vec=1, ch_per_block=128, tile_h=16, tile_w=32), "threads per block (need 1..1024)"),
    (dict(k=7, dtype="float32"), dict(vec=4, ch_per_block=128, tile_h=8, tile_w=8, out_h=2, out_w=2, stage_input=True),
     "bytes of shared memory > 49152"),
    (dict(k=7), dict(vec=8, ch_per_block=64, tile_h=8, tile_w=8, out_h=4, out_w=2), "registers per thread > 255"),
    (dict(k=5), dict(vec=4, ch_per_block=32, tile_h=16, tile_w=32, out_h=2, out_w=2), "registers"),   # x threads
])
def test_nhwc_check_rejects(problem_kw, change, words):
    reason = depthwise.NHWC.check(_base("nhwc", **problem_kw), dict(NHWC_OK, **change))
    assert reason is not None and words in reason, reason


@pytest.mark.parametrize("problem_kw,change,words", [
    (dict(W=50), dict(stage_input=True, vec=4), "does not divide W=50"),
    (dict(W=45), dict(stage_input=True, vec=2), "does not divide W=45"),
    (dict(), dict(stage_input=True, vec=8, tile_w=4, out_w=1), "tile_w*stride"),
    (dict(), dict(stage_input=False, vec=2), "vec only applies to staged loads"),
    (dict(C=3), dict(ch_per_block=8), "larger than the channel count"),
    (dict(W=12), dict(tile_w=32), "tile larger than the output"),
    (dict(), dict(tile_h=4, out_h=8), "tile not divisible"),
    (dict(dtype="float32"), dict(out_w=8, tile_w=32), "packed store wider than 16 bytes"),
    (dict(), dict(ch_per_block=16, tile_h=16, tile_w=32, out_h=1, out_w=1), "threads per block (need 1..1024)"),
    (dict(k=7, dtype="float32"), dict(stage_input=True, vec=4, ch_per_block=16, tile_h=16, tile_w=32,
                                      out_h=4, out_w=4), "bytes of shared memory > 49152"),
    (dict(k=7, stride=2, dtype="float32"), dict(ch_per_block=16, tile_h=16, tile_w=32, out_h=4, out_w=4),
     "registers"),                                                           # x 512 threads
])
def test_nchw_check_rejects(problem_kw, change, words):
    reason = depthwise.NCHW.check(_base("nchw", **problem_kw), dict(NCHW_OK, **change))
    assert reason is not None and words in reason, reason


def test_nchw_packed_store_allowed_when_unaligned():
    # W_out % out_w != 0: stores go element by element, so out_w * itemsize may exceed 16 bytes.
    problem = _base("nchw", W=45, dtype="float32")
    assert depthwise.NCHW.check(problem, dict(NCHW_OK, out_w=8, tile_w=32)) is None


def test_invalid_reason_rejects_values_off_the_space():
    problem = _base("nhwc")
    assert "out_h=3" in invalid_reason(depthwise.NHWC, problem, dict(NHWC_OK, out_h=3, tile_h=4))
    assert "do not match" in invalid_reason(depthwise.NHWC, problem, {k: v for k, v in NHWC_OK.items() if k != "vec"})
    assert "vec=8" in invalid_reason(depthwise.NHWC, _base("nhwc", dtype="float32"), dict(NHWC_OK, vec=8))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_accepted_configs_respect_the_limits(family):
    """Whatever check() accepts has a legal block, whole tiles and aligned vectors, and the launch
    covers the whole output."""
    for problem in (_base(family.layout, k=7), _base(family.layout, k=5, stride=2, C=40, H=33, W=40),
                    _base(family.layout, C=24, H=9, W=17, dtype="float32")):
        for cfg in valid_configs(family, problem):
            launch = family.launch(problem, cfg)
            assert 1 <= launch.threads <= 1024
            assert cfg["tile_h"] % cfg["out_h"] == 0 and cfg["tile_w"] % cfg["out_w"] == 0
            if family.layout == "nhwc":
                assert problem.C % cfg["vec"] == 0 and cfg["ch_per_block"] % cfg["vec"] == 0
            elif cfg["stage_input"]:
                assert problem.W % cfg["vec"] == 0
            gx, gy, gz = launch.grid
            assert gx * cfg["tile_h"] * cfg["tile_w"] >= problem.H_out * problem.W_out
            assert gy * cfg["ch_per_block"] >= problem.C and gz == problem.N
