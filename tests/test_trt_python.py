"""`autotune export-trt` without TensorRT or a GPU: the generated plugin module is valid Python, says what
is missing when TensorRT is absent, and - run against a small stand-in for `tensorrt.plugin` - hands
TensorRT the launch geometry and int32 arguments the kernel families compute, PTX with TensorRT's
parameter order, and the variants the database ranks. Nothing here runs under real TensorRT."""
import importlib.util
import random
import re
import sys
import types

import pytest

from autotune import cli, kernels
from autotune.exporters import trt_python
from autotune.exporters.trt_python import (SymInt, evaluate, export_python_plugins, format_reason, padded8,
                                           select_variants, symbolic_args, symbolic_launch, trt_param_order)
from autotune.kernels import depthwise, fused, pointwise
from autotune.problem import Problem
from autotune.searchspace import valid_configs
from autotune.store import FAILED, OK, WRONG, Store

GPU = {"name": "Test GPU", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
       "l2_bytes": 50 << 20, "memory_bytes": 80 << 30, "copy_bandwidth": 3e12}

PROBLEMS = {
    "dw_hwc8": Problem("dw", 1, 32, 16, 16, k=3, act="relu6", dtype="float16", layout="nhwc"),
    "dw_linear": Problem("dw", 2, 16, 15, 13, k=5, stride=2, act="relu", dtype="float32", layout="nchw"),
    "dw_hwc": Problem("dw", 1, 24, 12, 12, k=3, act="none", dtype="float32", layout="nhwc"),
    "pw_hwc": Problem("pw", 1, 24, 8, 8, C_out=40, act="relu", dtype="float32", layout="nhwc"),
    "pw_linear": Problem("pw", 2, 16, 8, 8, C_out=32, act="none", dtype="float16", layout="nchw"),
    "pw_hwc8": Problem("pw", 1, 12, 8, 8, C_out=20, act="relu6", dtype="float16", layout="nhwc"),
    "ir_hwc8": Problem("ir", 1, 12, 10, 9, C_out=12, k=3, expansion=4, act="relu6", dtype="float16", layout="nhwc"),
    "dwpw_linear": Problem("dwpw", 2, 24, 9, 11, C_out=16, k=3, stride=2, act="relu", act2="relu",
                           dtype="float32", layout="nchw"),
}
BLOCKS = ("dwpw", "ir")       # kernels compiled for their channel counts: C is static in these tests
N_VALID = 4           # verified trials per (problem, family)


def _configs(family, problem, n, seed):
    valid = valid_configs(family, problem)
    return random.Random(seed).sample(valid, min(n, len(valid)))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A small database: per problem, a few verified trials per family with distinct times, a faster
    WRONG trial, a faster FAILED one, and for the HWC8 pointwise problem a fastest 'ok' config that
    check() rejects (vec_x=8 does not divide C=12)."""
    path = tmp_path_factory.mktemp("db") / "t.db"
    store = Store(path)
    gid = store.add_gpu(GPU)
    expected = {}
    for name, p in PROBLEMS.items():
        store.add_problem(p)
        timed = []
        for fi, family in enumerate(kernels.families_for(p)):
            for i, config in enumerate(_configs(family, p, N_VALID, f"{name}{fi}")):
                t = 10.0 + 3.7 * i + 1.3 * fi
                store.add_trial(gid, p, family.name, config, OK, time_us=t)
                timed.append((t, family.name, config))
        timed.sort(key=lambda r: r[0])
        family = kernels.families_for(p)[0]
        other = [c for c in valid_configs(family, p) if all(c != r[2] for r in timed)]
        store.add_trial(gid, p, family.name, other[0], WRONG, time_us=1.0, error="differs")
        store.add_trial(gid, p, family.name, other[1], FAILED, error="worker died")
        if name == "pw_hwc8":
            bad = dict(timed[0][2], vec_x=8)
            assert pointwise.SIMT_FAMILY.check(p, bad) is not None and timed[0][1] == "pointwise"
            store.add_trial(gid, p, "pointwise", bad, OK, time_us=0.5)
        expected[name] = [(f, c) for _, f, c in timed[:trt_python.MAX_TACTICS]]
    # a problem without bias: onnx_fuse always emits one, so it is not exported
    nb = Problem("dw", 1, 8, 8, 8, k=3, bias=False, dtype="float32", layout="nchw")
    store.add_problem(nb)
    store.add_trial(gid, nb, "depthwise_nchw", depthwise.NCHW.default_config(nb), OK, time_us=1.0)
    # nor are a dense conv (no plugin op) and a TF32 problem (a float32 plugin stays exact)
    for other, family in ((Problem("conv", 1, 3, 16, 16, C_out=16, k=3, stride=2, act="relu6", dtype="float16",
                                   layout="nhwc"), "conv_nhwc_tc"),
                          (Problem("pw", 1, 24, 8, 8, C_out=48, act="relu", dtype="float32", layout="nhwc", tf32=True),
                           "pointwise_tf32")):
        store.add_problem(other)
        fam = kernels.family_named(family)
        store.add_trial(gid, other, family, fam.default_config(other), OK, time_us=1.0)
    store.close()
    return path, gid, expected


@pytest.fixture(scope="module")
def module_path(db, tmp_path_factory):
    path, _, _ = db
    return export_python_plugins(Store(path, readonly=True), "Test GPU", tmp_path_factory.mktemp("out"))


# ---- a stand-in for tensorrt / tensorrt.plugin ----------------------------------------------------
class Sym:
    """A dynamic shape expression: knows its value for the test, but is not constant, and - like
    TensorRT's SymExpr - has no reflected operators (int + Sym fails)."""

    def __init__(self, value):
        self.value = value

    is_constant = False

    @property
    def constant_value(self):
        raise RuntimeError("not constant")

    def _v(self, o):
        return o.value if isinstance(o, Sym) else o

    def __add__(self, o): return Sym(self.value + self._v(o))
    def __sub__(self, o): return Sym(self.value - self._v(o))
    def __mul__(self, o): return Sym(self.value * self._v(o))
    def __floordiv__(self, o): return Sym(self.value // self._v(o))


class Const(Sym):
    is_constant = True

    @property
    def constant_value(self):
        return self.value


def value(x):
    return x.value if isinstance(x, Sym) else x


def fake_tensorrt():
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.fake"
    trt.float32, trt.float16 = "DT_FP32", "DT_FP16"
    trt.TensorFormat = types.SimpleNamespace(LINEAR="F_LINEAR", HWC="F_HWC", HWC8="F_HWC8")
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.registry = {}

    def decorator(kind):
        def make(plugin_id):
            def wrap(fn):
                trtp.registry[(kind, plugin_id)] = fn
                return fn
            return wrap
        return make

    trtp.register, trtp.autotune, trtp.aot_impl = decorator("register"), decorator("autotune"), decorator("aot_impl")

    class KernelLaunchParams:
        grid_x = grid_y = grid_z = block_x = block_y = block_z = 1
        shared_mem = 0

    class AutoTuneCombination:
        def __init__(self, io_types=None, layouts=None, tactics=None):
            self.io_types, self.layouts, self.tactics = io_types, layouts, tactics

    trtp.KernelLaunchParams, trtp.AutoTuneCombination = KernelLaunchParams, AutoTuneCombination
    trtp.SymInt32 = lambda e: ("i32", e)
    trtp.SymIntExprs = types.SimpleNamespace(from_tuple=lambda t: list(t))
    trtp.TensorDesc, trtp.SymExprs = object, list
    trtp.ShapeExpr = Const
    trt.plugin = trtp
    return trt, trtp


class Desc:
    def __init__(self, dtype, fmt, shape):
        self.dtype, self.format, self.shape_expr = dtype, fmt, list(shape)

    def like(self):
        return Desc(self.dtype, self.format, self.shape_expr)


@pytest.fixture
def plugins(module_path, monkeypatch):
    trt, trtp = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.delenv("AUTOTUNE_TRT_GPU", raising=False)
    spec = importlib.util.spec_from_file_location("autotune_plugins_under_test", module_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, trt, trtp


def _format_of(problem):
    return trt_python.trt_format(problem)


def _call_aot(plugins, problem, tactic, wrap=Const):
    """Run the generated aot_impl for this problem's shape; returns (name, ptx, params, args) with
    shape expressions replaced by their values."""
    mod, trt, trtp = plugins
    dt = {"float32": trt.float32, "float16": trt.float16}[problem.dtype]
    fmt = getattr(trt.TensorFormat, _format_of(problem))
    x = Desc(dt, fmt, [wrap(problem.N), Const(problem.C), wrap(problem.H), wrap(problem.W)])   # channels static
    w = Desc(dt, trt.TensorFormat.LINEAR, [Const(v) for v in problem.weight_shape])
    b = Desc(dt, trt.TensorFormat.LINEAR, [Const(problem.bias_shape[0])])
    op = f"autotune::{problem.op}_conv2d"
    if problem.op in BLOCKS:          # the registered functions' attribute order
        attrs = [problem.k, problem.stride, problem.padding, problem.act, problem.act2, problem.C_out]
        attrs += [problem.expansion, "nchw"] if problem.op == "ir" else ["nchw"]
    else:
        attrs = [problem.k, problem.stride, problem.padding, problem.act, "nchw"]
        if problem.op == "pw":
            attrs.append(problem.C_out)
    out = trtp.registry[("register", op)](x, w, b, *attrs)
    name, ptx, params, extra = trtp.registry[("aot_impl", op)](x, w, b, *attrs, (out,), tactic)
    geometry = tuple(value(getattr(params, a)) for a in
                     ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem"))
    assert all(kind == "i32" for kind, _ in extra)
    return name.decode(), ptx.decode(), geometry, tuple(value(e) for _, e in extra), [value(s) for s in out.shape_expr]


# ---- (a), (b): the module ------------------------------------------------------------------------
def test_module_is_valid_python(module_path):
    text = module_path.read_text()
    compile(text, str(module_path), "exec")
    for op in ("dw", "pw", "dwpw", "ir"):
        assert f'@trtp.aot_impl("autotune::{op}_conv2d")' in text
    assert "samples/python/quickly_deployable_plugins" in text        # the API version followed is cited


def test_import_without_tensorrt_is_a_clear_error(module_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)
    spec = importlib.util.spec_from_file_location("autotune_plugins_no_trt", module_path)
    with pytest.raises(ImportError, match=r"TensorRT >= 10 .*tensorrt\.plugin"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_import_with_tensorrt_lacking_aot_is_a_clear_error(module_path, monkeypatch):
    trt, trtp = fake_tensorrt()
    del trtp.aot_impl
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    spec = importlib.util.spec_from_file_location("autotune_plugins_old_trt", module_path)
    with pytest.raises(ImportError, match="aot_impl"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_every_tuned_problem_with_bias_is_exported(plugins, db):
    mod = plugins[0]
    _, gid, expected = db
    assert set(mod.GPUS) == {gid}
    keys = {(v["op"], v["dtype"], v["format"], tuple(v["dims"].values())) for v in mod.VARIANTS}
    want = {(p.op, p.dtype, trt_python.trt_format(p), (p.N, p.C, p.H, p.W, p.C_out)) for p in PROBLEMS.values()}
    assert keys == want
    for name, p in PROBLEMS.items():
        rows = [v for v in mod.VARIANTS if v["dims"] == dict(N=p.N, C=p.C, H=p.H, W=p.W, C_out=p.C_out)
                and v["dtype"] == p.dtype and v["op"] == p.op]
        assert [(v["family"], v["config"]) for v in sorted(rows, key=lambda v: v["tactic"])] == \
            expected[name]
    assert all(v["kernel"] in mod.PTX for v in mod.VARIANTS)


def test_autotune_offers_formats_and_tactics(plugins):
    mod, trt, trtp = plugins
    p = PROBLEMS["pw_hwc8"]
    x = Desc(trt.float16, trt.TensorFormat.HWC8, [Const(v) for v in (p.N, p.C, p.H, p.W)])
    w = Desc(trt.float16, trt.TensorFormat.LINEAR, [Const(v) for v in p.weight_shape])
    combos = trtp.registry[("autotune", "autotune::pw_conv2d")](x, w, w, 1, 1, 0, "relu6", "nchw", p.C_out, ())
    assert [(c.io_types, c.layouts, c.tactics) for c in combos] == \
        [("FP16, FP16, FP16, FP16", "HWC8, LINEAR, LINEAR, HWC8", [1, 2, 3])]
    p = PROBLEMS["dw_linear"]
    x = Desc(trt.float32, trt.TensorFormat.LINEAR, [Const(v) for v in (p.N, p.C, p.H, p.W)])
    w = Desc(trt.float32, trt.TensorFormat.LINEAR, [Const(v) for v in p.weight_shape])
    combos = trtp.registry[("autotune", "autotune::dw_conv2d")](x, w, w, 5, 2, 2, "relu", "nchw", ())
    assert [(c.io_types, c.layouts) for c in combos] == [("FP32, FP32, FP32, FP32", "LINEAR, LINEAR, LINEAR, LINEAR")]
    assert combos[0].tactics == [1, 2, 3]


# ---- (c), (d): launch geometry and int32 arguments -------------------------------------------------
SHAPES = [dict(), dict(N=3, H=37, W=29), dict(N=16, H=7, W=7), dict(N=1, H=112, W=96)]


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("wrap", [Const, Sym], ids=["static", "dynamic"])
def test_launch_and_arguments_match_the_family(plugins, db, name, wrap):
    """For other shapes of the tuned kind (static, or N/H/W dynamic with static channels), the variants
    offered are those whose vector accesses the shape's sizes divide - none at all is a clear error - and
    what aot_impl hands TensorRT for each is the family's launch() and scalar_args."""
    mod = plugins[0]
    tuned = PROBLEMS[name]
    fmt = trt_python.trt_format(tuned)
    ran = 0
    for changes in SHAPES:
        p = tuned.replace(**changes)
        known = {"N": p.N, "C": p.C, "H": p.H, "W": p.W, "C_out": p.C_out} if wrap is Const else \
            {"C": p.C, "C_out": p.C_out}
        variants = mod.select_variants(p.op, p.k, p.stride, p.padding, p.act, p.dtype, fmt, known,
                                       act2=p.act2, expansion=p.expansion)
        sizes = {"C": p.C, "C_out": p.C_out, "W": p.W, "W_out": p.W_out, "HW": p.H * p.W}
        for v in variants:
            family = kernels.family_named(v["family"])
            assert v["divisors"] == {n: m for n, m in family.divisors(tuned, v["config"]).items() if m > 1}
            assert all(sizes[n] % m == 0 for n, m in v["divisors"].items()), (name, changes, v["config"])
            assert family.check(p, v["config"]) is None or "larger than" in family.check(p, v["config"])
        if not variants:
            with pytest.raises(ValueError, match="no tuned kernel"):
                _call_aot(plugins, p, 1, wrap)
            continue
        for tactic in range(1, len(variants) + 1):
            ran += 1
            entry, ptx, geometry, args, out_shape = _call_aot(plugins, p, tactic, wrap)
            v = variants[tactic - 1]
            family = kernels.family_named(v["family"])
            launch = family.launch(p, v["config"])
            assert geometry == (*launch.grid, *launch.block, launch.shared_mem), (name, changes, tactic)
            ldx, ldy = (padded8(p.C), padded8(p.C_out)) if fmt == "HWC8" else (None, None)
            assert args == kernels.scalar_args(p, ldx, ldy)
            assert out_shape == [p.N, p.C_out, p.H_out, p.W_out]
            assert entry == family.entry and ptx == mod.PTX[v["kernel"]]
    # with dynamic H/W only kernels free of spatial divisibility can be promised to every shape
    tuned_variants = [v for v in mod.VARIANTS if v["op"] == tuned.op and v["dtype"] == tuned.dtype
                      and v["dims"] == dict(N=tuned.N, C=tuned.C, H=tuned.H, W=tuned.W, C_out=tuned.C_out)]
    spatial = all(set(v["divisors"]) & {"W", "W_out", "HW"} for v in tuned_variants)
    assert ran or (wrap is Sym and spatial), f"{name}: no shape had a variant"


def test_hwc8_arguments_use_padded_strides(plugins):
    p = PROBLEMS["pw_hwc8"]                       # C=12 -> ldx 16, C_out=20 -> ldy 24
    _, _, _, args, _ = _call_aot(plugins, p, 1)
    assert args[-2:] == (16, 24) and args[:7] == (p.N, 12, p.H, p.W, 20, p.H, p.W)
    p = PROBLEMS["pw_hwc"]                        # fp32 HWC: unpadded
    assert _call_aot(plugins, p, 1)[3][-2:] == (24, 40)
    # symbolically: ldx = ceil(C/8)*8 for every C
    sym = symbolic_args(PROBLEMS["dw_hwc8"], "HWC8")
    for c in (1, 7, 8, 9, 30, 32, 33):
        env = dict(N=1, C=c, H=5, W=5, C_out=c)
        assert evaluate(sym[7], env) == evaluate(sym[8], env) == -(-c // 8) * 8


def _assert_symbolic_launch_is_launch(family, p, config):
    """launch() on symbolic sizes, evaluated and rendered as code, equals launch() for SHAPES' sizes."""
    sym = symbolic_launch(family, p, config)
    exprs = (*sym["grid"], *sym["block"], sym["shared_mem"])
    for changes in SHAPES:
        q = p.replace(**changes)
        env = dict(N=q.N, C=q.C, H=q.H, W=q.W, C_out=q.C_out)
        launch = family.launch(q, config)
        want = (*launch.grid, *launch.block, launch.shared_mem)
        assert tuple(evaluate(e, env) for e in exprs) == want, (family.name, config, changes)
        assert tuple(eval(trt_python.code_of(e), {}, env) for e in exprs) == want, (family.name, config, changes)


def test_symbolic_launch_renders_code_equal_to_launch():
    for p in PROBLEMS.values():
        for family in kernels.families_for(p):
            _assert_symbolic_launch_is_launch(family, p, family.default_config(p))


def test_whole_block_launches_are_symbolic_in_n_h_w():
    """The one-kernel inverted residuals round their channel counts to the template's row strides
    (odd 16-byte units), which a SymInt cannot do: compiled for C and C_out, they keep them concrete,
    and their launches stay exact for any N, H and W (`autotune export-trt` crashed on them)."""
    p = Problem("ir", 1, 16, 10, 9, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
    whole = [f for f in kernels.families_for(p, "sm_90") if f in (fused.IR_STREAM, fused.IR_TENSOR_DW, fused.IR_REGISTER_DW)]
    assert len(whole) == 3
    for family in whole:
        for config in [family.default_config(p), *_configs(family, p, 3, family.name)]:
            _assert_symbolic_launch_is_launch(family, p, config)


def test_symint_keeps_the_symbol_on_the_left():
    n = SymInt.name("H")
    assert (2 + n).code() == "(H + 2)" and (3 * n).code() == "(H * 3)"
    assert ((n + 2) - 5).code() == "(H - 3)" and (n * 1) is n and (n + 0) is n
    with pytest.raises(TypeError, match="left"):
        10 - n


# ---- PTX ------------------------------------------------------------------------------------------
def test_ptx_parameters_follow_trt_order(plugins):
    mod = plugins[0]
    for ptx in mod.PTX.values():
        entry = re.search(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx)
        names = [p.split()[-1] for p in entry.group(2).split(",")]
        e = entry.group(1)
        assert names == [f"{e}_param_{i}" for i in (0, 1, 2, *range(4, 13), 3)]
        assert f"[{e}_param_3]" in ptx                  # the body still loads y by name
    assert re.search(r"^\.target sm_90", next(iter(mod.PTX.values())), re.M)


def test_param_reorder_rejects_other_signatures():
    with pytest.raises(ValueError, match="no .entry"):
        trt_param_order(".visible .entry other(\n.param .u64 other_param_0\n)", "dw_conv2d")


# ---- (e): variant selection -----------------------------------------------------------------------
def test_selection_best_then_next_verified(db):
    path, gid, expected = db
    store = Store(path, readonly=True)
    for name, p in PROBLEMS.items():
        got = select_variants(store, gid, p)
        assert [(v.family, v.config) for v in got] == expected[name]
        assert [v.rank for v in got] == [1, 2, 3]
        assert [v.time_us for v in got] == sorted(v.time_us for v in got)
        assert all(v.time_us > 1.0 for v in got)              # the faster WRONG trial is never offered


def test_selection_excludes_configs_invalid_under_hwc8(db):
    path, gid, expected = db
    store = Store(path, readonly=True)
    p = PROBLEMS["pw_hwc8"]
    assert store.best(gid, p.key)["config"]["vec_x"] == 8     # the stored best is the bad config
    got = select_variants(store, gid, p)
    assert all(p.C % v.config["vec_x"] == 0 and 16 % v.config["vec_x"] == 0 for v in got)
    assert all(v.config["vec_y"] and 24 % v.config["vec_y"] == 0 for v in got) and len(got) == 3
    # the stride rule itself: vector widths must divide the padded strides, not only C / C_out
    fam, cfg = pointwise.SIMT_FAMILY, dict(expected["pw_hwc"][0][1])
    q = PROBLEMS["pw_hwc"]
    if cfg["vec_x"] > 1:
        assert format_reason(fam, q, cfg, ldx=q.C + 1, ldy=q.C_out) is not None
    assert format_reason(fam, q, dict(cfg, vec_y=8), ldx=q.C, ldy=44) is not None or q.C_out % 8
    assert format_reason(fam, q, cfg, *trt_python.strides(q, "HWC")) is None
    dcfg = dict(vec=8, ch_per_block=32, tile_h=2, tile_w=4, out_h=1, out_w=1, adjacent_cols=False,
                stage_input=False, unroll_rows=True)
    d = PROBLEMS["dw_hwc8"]
    assert depthwise.NHWC.check(d, dcfg) is None
    assert format_reason(depthwise.NHWC, d, dcfg, 36, 36) and format_reason(depthwise.NHWC, d, dcfg, 40, 40) is None


def test_selection_skips_arch_specific_and_large_shared_memory_kernels():
    """The wgmma family runs on sm_90 alone (sm_90a code) and opts in to more than 48 KB of dynamic shared
    memory, which TensorRT's launch does not: the exporters offer the next verified variant instead."""
    p = Problem(op="pw", N=16, C=960, H=7, W=7, C_out=320, dtype="float16", layout="nhwc")
    fam = pointwise.WGMMA_FAMILY
    assert "one arch only" in format_reason(fam, p, fam.default_config(p), p.C, p.C_out)
    tc = pointwise.TC_FAMILY
    assert format_reason(tc, p, tc.default_config(p), p.C, p.C_out) is None
    # a streaming inverted residual: over 48 KB of dynamic shared memory in one configuration, under in another
    from autotune.kernels import fused
    ir = Problem(op="ir", N=16, C=24, H=56, W=56, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
    big = {"vec": 8, "tile_w": 16, "out_h": 2, "cols": 16, "strip": 8, "min_blocks": 1, "run": 1, "ring": "float"}
    small = {**big, "vec": 4, "tile_w": 8, "cols": 8, "ring": "half"}
    assert fused.IR_STREAM.check(ir, big) is None and fused.IR_STREAM.check(ir, small) is None
    assert "over 48 KB" in format_reason(fused.IR_STREAM, ir, big, ir.C, ir.C_out)
    assert fused.IR_STREAM.shared_bytes(ir, small) <= 48 * 1024
    assert format_reason(fused.IR_STREAM, ir, small, ir.C, ir.C_out) is None


def test_nearest_tuned_shape_and_unknown_kind(plugins):
    mod = plugins[0]
    p = PROBLEMS["dw_linear"]
    got = mod.select_variants("dw", 5, 2, 2, "relu", "float32", "LINEAR", {"N": 7, "H": 100, "W": 3})
    assert got and all(v["dims"]["C"] == p.C for v in got)
    assert mod.select_variants("dw", 7, 2, 3, "relu", "float32", "LINEAR", {}) == []
    with pytest.raises(ValueError, match="no tuned kernel"):
        _call_aot(plugins, p.replace(act="none"), 1)


# ---- the command line -----------------------------------------------------------------------------
def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_module(capsys, db, tmp_path):
    path, _, _ = db
    code, out, _ = run(capsys, "export-trt", "--db", str(path), "--gpu", "all", "--out", str(tmp_path / "o"))
    assert code == 0 and "autotune_plugins.py" in out
    compile((tmp_path / "o" / "autotune_plugins.py").read_text(), "m", "exec")


def test_cli_missing_database(capsys, tmp_path):
    code, _, err = run(capsys, "export-trt", "--db", str(tmp_path / "none.db"), "--gpu", "all", "--out", str(tmp_path))
    assert code == 2 and "no tuning database" in err


def test_cli_unknown_gpu(capsys, db, tmp_path):
    path, _, _ = db
    code, _, err = run(capsys, "export-trt", "--db", str(path), "--gpu", "RTX 9999", "--out", str(tmp_path))
    assert code == 2 and "RTX 9999" in err and "Test GPU" in err
    assert not (tmp_path / "autotune_plugins.py").exists()


# ---- GPU: what the AOT implementation hands TensorRT, launched as TensorRT would --------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("tactic", [1, 2])
def test_aot_kernels_run_as_tensorrt_launches_them(plugins, name, tactic):
    """The PTX, grid/block/shared memory and argument order (inputs, int32 extras, output) from
    aot_impl, launched through CuPy on buffers laid out in the TensorRT format - for HWC8 with the
    channels padded to a multiple of 8, the padding filled with NaN so reading it would show - match
    the float64 reference."""
    import cupy as cp
    import numpy as np

    from autotune.reference import compare, random_inputs, reference
    p = PROBLEMS[name]
    kernel, ptx, geometry, args, _ = _call_aot(plugins, p, tactic)
    ldx, ldy = args[7], args[8]
    host = random_inputs(p, np.random.default_rng(tactic))
    if p.layout == "nhwc":                       # HWC / HWC8: [N, H, W, ldx] with padded channels
        x = np.full((p.N, p.H, p.W, ldx), np.nan, dtype=p.dtype)
        x[..., :p.C] = host["x"]
        y_shape = (p.N, p.H_out, p.W_out, ldy)
    else:
        x = host["x"]
        y_shape = p.output_shape
    module = cp.cuda.function.Module()
    module.load(ptx.encode() + b"\0")
    fn = module.get_function(kernel)
    dx, dw, db = cp.asarray(x), cp.asarray(host["w"]), cp.asarray(host["bias"])
    dy = cp.full(y_shape, cp.nan, dtype=p.dtype)
    grid, block, shared = geometry[:3], geometry[3:6], geometry[6]
    fn(grid, block, (dx, dw, db, *(np.int32(a) for a in args), dy), shared_mem=shared)
    cp.cuda.Device().synchronize()
    out = cp.asnumpy(dy)[..., :p.C_out] if p.layout == "nhwc" else cp.asnumpy(dy)
    ok, err = compare(out, reference(p, **host), p.dtype)
    assert ok, f"{name} tactic {tactic}: worst error / tolerance {err}"


def test_block_variants_serve_only_their_channel_counts(plugins):
    """A block's kernel is compiled for its C (and C_out): another C finds no variant, and says so."""
    mod = plugins[0]
    p = PROBLEMS["ir_hwc8"]
    known = {"N": 3, "C": p.C, "H": 20, "W": 20, "C_out": p.C_out}
    args = (p.op, p.k, p.stride, p.padding, p.act, p.dtype, "HWC8")
    assert mod.select_variants(*args, known, act2=p.act2, expansion=p.expansion)
    assert not mod.select_variants(*args, dict(known, C=p.C * 2), act2=p.act2, expansion=p.expansion)
    assert not mod.select_variants(*args, known, act2=p.act2, expansion=6)
    with pytest.raises(ValueError, match="no tuned kernel"):
        _call_aot(plugins, p.replace(C=p.C * 2, C_out=p.C_out * 2), 1)
