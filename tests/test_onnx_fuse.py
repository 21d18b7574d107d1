"""`autotune onnx-fuse`: the graph rewrite on a MobileNetV2-like model built here, checked node by node
and by running both models (the plugins through the project's float64 reference), the database
filter, and the command line."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from onnx.reference.op_run import OpRun  # noqa: E402

from autotune import cli, kernels  # noqa: E402
from autotune.exporters.onnx_fuse import FuseError, fuse_model  # noqa: E402
from autotune.problem import Problem  # noqa: E402
from autotune.reference import reference  # noqa: E402
from autotune.store import OK, Store  # noqa: E402

GPU = {"name": "Test GPU", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
       "l2_bytes": 50 << 20, "memory_bytes": 80 << 30, "copy_bandwidth": 3e12}
X_SHAPE = (1, 16, 8, 8)


# ---- the model ----------------------------------------------------------------------------------
class _Builder:
    def __init__(self, dtype, seed=0):
        self.dt = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array).astype(self.dt), name))
        return name

    def conv(self, name, x, c_in, c_out, k, group=1, stride=1, pad=None, dilation=1, bias=False, pads=None):
        fan_in = c_in // group * k * k
        w = self.init(f"{name}.w", self.rng.uniform(-1, 1, (c_out, c_in // group, k, k)) / np.sqrt(fan_in))
        inputs = [x, w]
        if bias:
            inputs.append(self.init(f"{name}.b", self.rng.uniform(-0.5, 0.5, c_out)))
        p = k // 2 * dilation if pad is None else pad
        self.nodes.append(helper.make_node("Conv", inputs, [f"{name}.out"], name=name, group=group,
                                           kernel_shape=[k, k], strides=[stride, stride],
                                           dilations=[dilation, dilation], pads=pads or [p] * 4))
        return f"{name}.out"

    def bn(self, name, x, c):
        r = self.rng
        params = [self.init(f"{name}.{n}", v) for n, v in (
            ("gamma", r.uniform(0.5, 1.5, c)), ("beta", r.uniform(-0.5, 0.5, c)),
            ("mean", r.uniform(-0.3, 0.3, c)), ("var", r.uniform(0.2, 2.0, c)))]
        self.nodes.append(helper.make_node("BatchNormalization", [x, *params], [f"{name}.out"], name=name,
                                           epsilon=1e-3))
        return f"{name}.out"

    def clip6(self, name, x, via_constant=False):
        if via_constant:
            lo, hi = f"{name}.min", f"{name}.max"
            for n, v in ((lo, 0.0), (hi, 6.0)):
                self.nodes.append(helper.make_node("Constant", [], [n], name=f"{n}.const",
                                                   value=numpy_helper.from_array(np.array(v, self.dt))))
        else:
            lo, hi = self.init(f"{name}.min", np.array(0.0)), self.init(f"{name}.max", np.array(6.0))
        self.nodes.append(helper.make_node("Clip", [x, lo, hi], [f"{name}.out"], name=name))
        return f"{name}.out"

    def op(self, op_type, name, inputs):
        self.nodes.append(helper.make_node(op_type, inputs, [f"{name}.out"], name=name))
        return f"{name}.out"


FUSED = {  # replacement node -> (op type, absorbed nodes, act, output shape)
    "pw1": ("pw_conv2d", ["pw1", "bn1", "clip1"], "relu6"),
    "dw1": ("dw_conv2d", ["dw1", "bn2", "clip2"], "relu6"),
    "pw2": ("pw_conv2d", ["pw2", "bn3"], "none"),
    "res": ("pw_conv2d", ["res"], "none"),
    "dw2": ("dw_conv2d", ["dw2", "bn4", "relu4"], "relu"),
    "pw3": ("pw_conv2d", ["pw3", "relu5"], "relu"),
    "shared": ("dw_conv2d", ["shared"], "none"),
}
SKIPPED = {  # node -> words its reason must contain
    "dilated": "dilations",
    "bn_shared": "other consumers",
    "grouped": "group 2",
    "asym": "pads",
    "k4": "kernel 4x4",
    "graph_w": "not an initializer",
}


def mobilenet_like(dtype="float32", seed=0):
    b = _Builder(dtype, seed)
    # inverted residual block: expand 1x1 + BN + ReLU6, depthwise 3x3 + BN + ReLU6, project 1x1 + BN
    t = b.clip6("clip1", b.bn("bn1", b.conv("pw1", "x", 16, 96, 1), 96))
    t = b.clip6("clip2", b.bn("bn2", b.conv("dw1", t, 96, 96, 3, group=96), 96), via_constant=True)
    t = b.bn("bn3", b.conv("pw2", t, 96, 24, 1), 24)
    r = b.conv("res", "x", 16, 24, 1, bias=True)                  # residual branch: plain 1x1 with bias
    s = b.op("Add", "add", [t, r])
    # strided depthwise + BN + ReLU, then 1x1 (with bias) + ReLU
    t = b.op("Relu", "relu4", [b.bn("bn4", b.conv("dw2", s, 24, 24, 3, group=24, stride=2), 24)])
    out1 = b.op("Relu", "relu5", [b.conv("pw3", t, 24, 32, 1, bias=True)])
    # what must not be fused
    out2 = b.conv("dilated", s, 24, 24, 3, group=24, dilation=2)
    shared = b.conv("shared", s, 24, 24, 3, group=24)                # read by bn_shared and by Sigmoid
    out3 = b.op("Add", "add_shared", [b.bn("bn_shared", shared, 24), b.op("Sigmoid", "sig", [shared])])
    out4 = b.conv("grouped", s, 24, 24, 3, group=2)
    out5 = b.conv("asym", s, 24, 24, 3, group=24, pads=[1, 1, 0, 0])
    out6 = b.conv("k4", s, 24, 24, 4, group=24, pad=1)
    b.nodes.append(helper.make_node("Conv", [s, "w_in"], ["graph_w.out"], name="graph_w", group=24,
                                    kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    et = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
    inputs = [helper.make_tensor_value_info("x", et, X_SHAPE),
              helper.make_tensor_value_info("w_in", et, (24, 1, 3, 3))]
    side = (1, 24, 8, 8)
    shapes = {out1: (1, 32, 4, 4), out2: side, out3: side, out4: side, out5: (1, 24, 7, 7), out6: (1, 24, 7, 7),
              "graph_w.out": side}
    outputs = [helper.make_tensor_value_info(o, et, shape) for o, shape in shapes.items()]
    graph = helper.make_graph(b.nodes, "mobilenet_like", inputs, outputs, b.inits)
    # opset 14: onnx's reference BatchNormalization-9 (opsets 9-13) blends in the batch statistics
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model


def feeds(dtype, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-1, 1, X_SHAPE).astype(dtype),
            "w_in": rng.uniform(-0.5, 0.5, (24, 1, 3, 3)).astype(dtype)}


# ---- the plugins, for onnx's reference evaluator --------------------------------------------------
def _plugin_run(op, x, w, b, kernel, stride, padding, act, C_out=None):
    N, C, H, W = x.shape
    act = act.decode() if isinstance(act, bytes) else act
    fields = dict(N=N, C=C, H=H, W=W, act=act, dtype=x.dtype.name, layout="nchw", bias=True)
    if op == "dw":
        problem = Problem("dw", k=kernel, stride=stride, padding=padding, **fields)
    else:
        assert (kernel, stride, padding) == (1, 1, 0)
        problem = Problem("pw", C_out=C_out, **fields)
    assert w.shape == problem.weight_shape and b.shape == problem.bias_shape
    return (reference(problem, x, w, b).astype(x.dtype),)


class dw_conv2d(OpRun):  # noqa: N801 - the class name is the op type
    op_domain = "autotune"

    def _run(self, x, w, b, kernel=None, stride=None, padding=None, act=None, layout=None,
             plugin_namespace=None, aot=None):
        assert layout in ("nchw", b"nchw") and aot == 1
        return _plugin_run("dw", x, w, b, kernel, stride, padding, act)


class pw_conv2d(OpRun):  # noqa: N801
    op_domain = "autotune"

    def _run(self, x, w, b, kernel=None, stride=None, padding=None, act=None, C_out=None, layout=None,
             plugin_namespace=None, aot=None):
        assert layout in ("nchw", b"nchw") and aot == 1
        return _plugin_run("pw", x, w, b, kernel, stride, padding, act, C_out)


def run_both(model, fused, dtype):
    f = feeds(dtype)
    want = ReferenceEvaluator(model).run(None, f)
    got = ReferenceEvaluator(fused, new_ops=[dw_conv2d, pw_conv2d]).run(None, f)
    return want, got


def nodes_by_name(model):
    return {n.name: n for n in model.graph.node}


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# ---- (a) the rewrite ----------------------------------------------------------------------------
def test_fuses_the_expected_nodes_and_reports_the_rest():
    model = mobilenet_like()
    fused, report = fuse_model(model)
    onnx.checker.check_model(fused)
    by_name = nodes_by_name(fused)
    plugins = {n.name: n for n in fused.graph.node if n.domain == "autotune"}
    assert set(plugins) == set(FUSED)
    for name, (op_type, absorbed, act) in FUSED.items():
        node = plugins[name]
        a = attrs(node)
        assert node.op_type == op_type
        assert a["plugin_namespace"] == b"autotune" and a["aot"] == 1 and a["layout"] == b"nchw"
        assert a["act"] == act.encode()
        assert a["kernel"] == (3 if op_type == "dw_conv2d" else 1)
        assert a["stride"] == (2 if name == "dw2" else 1)
        assert a["padding"] == (1 if op_type == "dw_conv2d" else 0)
        assert ("C_out" in a) == (op_type == "pw_conv2d")
        assert len(node.input) == 3 and node.output[0] == f"{absorbed[-1]}.out"
        for gone in absorbed[1:]:
            assert gone not in by_name
    assert attrs(plugins["pw1"])["C_out"] == 96 and attrs(plugins["pw3"])["C_out"] == 32
    # untouched: the skipped convolutions, the BN whose input is shared, Add, Sigmoid, Constant-free
    for name in ("dilated", "grouped", "asym", "k4", "graph_w", "bn_shared", "sig", "add", "add_shared"):
        assert by_name[name].domain == "" and by_name[name] == nodes_by_name(model)[name]
    assert len(fused.graph.node) == len(model.graph.node) - 2 * 3 - 1 - 1 - 2   # BN/act absorbed, Constants gone
    assert {(o.domain, o.version) for o in fused.opset_import} == {("", 14), ("autotune", 1)}
    # the report
    assert [f.name for f in report.fused] == list(FUSED)
    for f in report.fused:
        assert f.nodes == FUSED[f.name][1] and f.tier is None
    assert next(f for f in report.fused if f.name == "dw1").problem_key == \
        "dw k3 s1 p1 N1 C96 8x8 relu6 bias float32 nchw"
    assert next(f for f in report.fused if f.name == "pw2").problem_key == \
        "pw 1x1 N1 C96->24 8x8 none bias float32 nchw"
    skipped = dict(report.skipped)
    assert set(skipped) == set(SKIPPED)
    for name, words in SKIPPED.items():
        assert words in skipped[name], (name, skipped[name])
    text = report.format()
    assert "fused 7" in text and "dilations" in text


def test_old_weights_are_removed_and_new_ones_folded():
    model = mobilenet_like()
    fused, _ = fuse_model(model)
    names = {t.name for t in fused.graph.initializer}
    for gone in ("pw1.w", "bn1.gamma", "bn1.var", "clip1.min", "clip1.max", "res.w", "res.b", "dw1.w"):
        assert gone not in names
    for kept in ("dilated.w", "bn_shared.gamma", "grouped.w"):
        assert kept in names
    assert "shared.w" not in names                    # shared was fused (without its BN)
    assert not any(n.op_type == "Constant" for n in fused.graph.node)
    referenced = {i for n in fused.graph.node for i in n.input}
    assert names <= referenced                        # no dangling initializer
    # the folded weight of dw1, by hand
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    s = inits["bn2.gamma"].astype(np.float64) / np.sqrt(inits["bn2.var"].astype(np.float64) + 1e-3)
    node = nodes_by_name(fused)["dw1"]
    new = {t.name: numpy_helper.to_array(t) for t in fused.graph.initializer}
    np.testing.assert_allclose(new[node.input[1]], inits["dw1.w"] * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(new[node.input[2]], inits["bn2.beta"] - inits["bn2.mean"] * s, rtol=1e-5, atol=1e-7)
    assert new[node.input[1]].dtype == np.float32
    np.testing.assert_array_equal(new[nodes_by_name(fused)["shared"].input[2]], np.zeros(24, np.float32))


# ---- (b) outputs are preserved --------------------------------------------------------------------
def test_outputs_are_preserved_float32():
    model = mobilenet_like("float32")
    fused, _ = fuse_model(model)
    want, got = run_both(model, fused, np.float32)
    assert len(want) == len(got) == 7
    for w, g in zip(want, got):
        assert g.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    assert np.abs(want[0]).max() > 0.1 and (want[0] == 0).any()       # relu active, not all zero


def test_outputs_are_preserved_float16():
    model = mobilenet_like("float16")
    fused, report = fuse_model(model)
    assert len(report.fused) == 7 and report.fused[0].problem_key.endswith("float16 nchw")
    plugin = nodes_by_name(fused)["pw1"]
    assert {t.name: t for t in fused.graph.initializer}[plugin.input[1]].data_type == TensorProto.FLOAT16
    want, got = run_both(model, fused, np.float16)
    for w, g in zip(want, got):
        assert g.dtype == np.float16
        # the original rounds to fp16 after every op, the fused model once per plugin
        np.testing.assert_allclose(g.astype(np.float32), w.astype(np.float32), rtol=2e-2,
                                   atol=2e-2 * float(np.abs(w.astype(np.float32)).max()))


def test_clip_attributes_of_old_opsets_are_relu6():
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.uniform(-1, 1, (8, 1, 5, 5)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="dw", group=8, kernel_shape=[5, 5],
                              pads=[2, 2, 2, 2], strides=[2, 2]),
             helper.make_node("Clip", ["c"], ["y"], name="clip", min=0.0, max=6.0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 8, 9, 9))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 8, 5, 5))], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 6
    fused, report = fuse_model(model)
    (node,) = fused.graph.node
    assert node.op_type == "dw_conv2d" and attrs(node)["act"] == b"relu6" and attrs(node)["kernel"] == 5
    assert report.fused[0].problem_key == "dw k5 s2 p2 N2 C8 9x9 relu6 bias float32 nchw"
    x = {"x": rng.uniform(-4, 4, (2, 8, 9, 9)).astype(np.float32)}
    np.testing.assert_allclose(ReferenceEvaluator(fused, new_ops=[dw_conv2d, pw_conv2d]).run(None, x)[0],
                               ReferenceEvaluator(model).run(None, x)[0], rtol=1e-4, atol=1e-4)


def test_other_clips_and_dtypes_are_left_alone():
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.uniform(-1, 1, (4, 8, 1, 1)).astype(np.float32), "w")
    w64 = numpy_helper.from_array(rng.uniform(-1, 1, (4, 8, 1, 1)), "w64")
    lo, hi = (numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", -1.0), ("hi", 1.0)))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="pw", kernel_shape=[1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip"),
             helper.make_node("Conv", ["x64", "w64"], ["y64"], name="pw64", kernel_shape=[1, 1])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 8, 3, 3)),
                     helper.make_tensor_value_info("x64", TensorProto.DOUBLE, (1, 8, 3, 3))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 3, 3)),
         helper.make_tensor_value_info("y64", TensorProto.DOUBLE, (1, 4, 3, 3))], [w, w64, lo, hi])
    fused, report = fuse_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
    assert [(n.name, n.op_type) for n in fused.graph.node] == [("pw", "pw_conv2d"), ("clip", "Clip"),
                                                                ("pw64", "Conv")]
    assert attrs(fused.graph.node[0])["act"] == b"none" and fused.graph.node[0].output == ["c"]
    skipped = dict(report.skipped)
    assert "neither ReLU nor ReLU6" in skipped["clip"] and "DOUBLE" in skipped["pw64"]
    assert {"lo", "hi", "w64"} <= {t.name for t in fused.graph.initializer}


def test_unknown_shapes_fuse_without_a_database_only(tmp_path):
    model = mobilenet_like()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    fused, report = fuse_model(model)
    assert len(report.fused) == 7 and all(f.problem_key is None for f in report.fused)
    store = tiny_store(tmp_path, Problem("dw", 1, 96, 8, 8, k=3, act="relu6"))
    _, report = fuse_model(model, store=store, gpu="Test GPU")
    assert not report.fused
    assert dict(report.skipped)["dw1"] == "shape unknown"


# ---- (c) fusing only what the database covers ----------------------------------------------------
def tiny_store(tmp_path, *problems, gpu=GPU):
    store = Store(tmp_path / "tiny.db")
    gid = store.add_gpu(gpu)
    for p in problems:
        store.add_problem(p)
        family = kernels.families_for(p)[0]
        store.add_trial(gid, p, family.name, family.default_config(p), OK, time_us=5.0)
    return store


def test_database_filter_exact_shape(tmp_path):
    store = tiny_store(tmp_path, Problem("dw", 1, 96, 8, 8, k=3, act="relu6"))
    fused, report = fuse_model(mobilenet_like(), store=store, gpu="Test GPU")
    assert [f.name for f in report.fused] == ["dw1"] and report.fused[0].tier == "exact"
    assert [n.name for n in fused.graph.node if n.domain == "autotune"] == ["dw1"]
    skipped = dict(report.skipped)
    assert "not tuned on Test GPU" in skipped["pw1"] and "pw 1x1 N1 C16->96 8x8 relu6" in skipped["pw1"]
    assert "not tuned" in skipped["dw2"] and "not tuned" in skipped["shared"]
    # the outputs still agree
    want, got = run_both(mobilenet_like(), fused, np.float32)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_database_filter_accepts_nearest_shape_of_the_same_kind(tmp_path):
    # (lookup also requires the tuned configuration to be valid for the new shape: keep it small)
    store = tiny_store(tmp_path, Problem("dw", 2, 48, 8, 8, k=3, act="relu6"))
    _, report = fuse_model(mobilenet_like(), store=store)          # the only GPU in the store
    assert [f.name for f in report.fused] == ["dw1"]
    assert report.fused[0].tier.startswith("nearest tuned shape on this GPU")


def test_database_other_gpu_or_unknown_gpu(tmp_path):
    other = dict(GPU, name="Other GPU")
    store = tiny_store(tmp_path, Problem("dw", 1, 96, 8, 8, k=3, act="relu6"), gpu=other)
    store.add_gpu(GPU)
    # tuned only on another GPU of the same compute capability: not good enough
    _, report = fuse_model(mobilenet_like(), store=store, gpu="Test GPU")
    assert not report.fused and "same compute capability" in dict(report.skipped)["dw1"]
    with pytest.raises(FuseError, match="choose one with --gpu"):
        fuse_model(mobilenet_like(), store=store)
    with pytest.raises(FuseError, match="no GPU 'Nope'"):
        fuse_model(mobilenet_like(), store=store, gpu="Nope")


# ---- (d) the command line -----------------------------------------------------------------------
def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_a_valid_model(capsys, tmp_path):
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(mobilenet_like(), src)
    code, out, err = run_cli(capsys, "onnx-fuse", src, dst)
    assert code == 0, err
    fused = onnx.load(dst)
    onnx.checker.check_model(fused)
    onnx.checker.check_model(str(dst), full_check=True)
    assert sum(n.domain == "autotune" for n in fused.graph.node) == 7
    assert "fused 7" in out and "dilated: dilations" in out and "graph_w" in out


def test_cli_with_database(capsys, tmp_path):
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(mobilenet_like(), src)
    store = tiny_store(tmp_path, Problem("pw", 1, 96, 8, 8, C_out=24))
    store.close()
    code, out, err = run_cli(capsys, "onnx-fuse", src, dst, "--db", store.path, "--gpu", "Test GPU")
    assert code == 0, err
    assert [n.name for n in onnx.load(dst).graph.node if n.domain == "autotune"] == ["pw2"]
    assert "exact" in out
    code, _, err = run_cli(capsys, "onnx-fuse", src, dst, "--db", store.path, "--gpu", "Nope")
    assert code == 2 and "no GPU 'Nope'" in err


@pytest.mark.parametrize("case", ["missing", "garbage", "missing_db", "gpu_without_db"])
def test_cli_errors(capsys, tmp_path, case):
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(mobilenet_like(), src)
    argv = {"missing": ["onnx-fuse", tmp_path / "nope.onnx", dst],
            "garbage": ["onnx-fuse", tmp_path / "bad.onnx", dst],
            "missing_db": ["onnx-fuse", src, dst, "--db", tmp_path / "none.db"],
            "gpu_without_db": ["onnx-fuse", src, dst, "--gpu", "Test GPU"]}[case]
    (tmp_path / "bad.onnx").write_bytes(b"not a model at all")
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert {"missing": "no such file", "garbage": "not a valid ONNX model", "missing_db": "no tuning database",
            "gpu_without_db": "--gpu only applies with --db"}[case] in err
    assert not dst.exists()


def test_fuse_file(tmp_path):
    from autotune.exporters.onnx_fuse import fuse_file
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(mobilenet_like(), src)
    report = fuse_file(src, dst)
    assert len(report.fused) == 7 and len(onnx.load(dst).graph.node) == len(fuse_model(mobilenet_like())[0].graph.node)
    with pytest.raises(FileNotFoundError, match="no such file"):
        fuse_file(tmp_path / "nope.onnx", dst)


# ---- (c) blocks ---------------------------------------------------------------------------------
def _block_plugin_run(op, x, w, b, kernel, stride, padding, act, act2, C_out, expansion=1):
    N, C, H, W = x.shape
    act, act2 = (a.decode() if isinstance(a, bytes) else a for a in (act, act2))
    problem = Problem(op, N, C, H, W, C_out=C_out, k=kernel, stride=stride, padding=padding, act=act, act2=act2,
                      expansion=expansion, bias=True, dtype=x.dtype.name, layout="nchw")
    assert w.shape == problem.weight_shape and b.shape == problem.bias_shape
    return (reference(problem, x, w, b).astype(x.dtype),)


class dwpw_conv2d(OpRun):  # noqa: N801
    op_domain = "autotune"

    def _run(self, x, w, b, kernel=None, stride=None, padding=None, act=None, act2=None, C_out=None,
             layout=None, plugin_namespace=None, aot=None):
        assert layout in ("nchw", b"nchw") and aot == 1
        return _block_plugin_run("dwpw", x, w, b, kernel, stride, padding, act, act2, C_out)


class ir_conv2d(OpRun):  # noqa: N801
    op_domain = "autotune"

    def _run(self, x, w, b, kernel=None, stride=None, padding=None, act=None, act2=None, C_out=None,
             expansion=None, layout=None, plugin_namespace=None, aot=None):
        assert layout in ("nchw", b"nchw") and aot == 1
        return _block_plugin_run("ir", x, w, b, kernel, stride, padding, act, act2, C_out, expansion)


def blocks_model(dtype="float32"):
    """An inverted residual with its residual Add, one without (C_in != C_out), and a dw -> 1x1 pair."""
    b = _Builder(dtype, seed=4)

    def ir(prefix, x, c_in, c_out, stride):
        t = b.clip6(f"{prefix}c1", b.bn(f"{prefix}b1", b.conv(f"{prefix}e", x, c_in, c_in * 4, 1), c_in * 4))
        t = b.clip6(f"{prefix}c2", b.bn(f"{prefix}b2", b.conv(f"{prefix}d", t, c_in * 4, c_in * 4, 3,
                                                              group=c_in * 4, stride=stride), c_in * 4))
        return b.bn(f"{prefix}b3", b.conv(f"{prefix}p", t, c_in * 4, c_out, 1), c_out)

    t = b.op("Add", "add1", [ir("a", "x", 16, 16, 1), "x"])
    t = ir("b", t, 16, 24, 2)
    t = b.op("Relu", "r1", [b.bn("bn_d", b.conv("dw", t, 24, 24, 3, group=24), 24)])
    out = b.op("Relu", "r2", [b.conv("pw", t, 24, 8, 1, bias=True)])
    et = TensorProto.FLOAT if dtype == "float32" else TensorProto.FLOAT16
    graph = helper.make_graph(b.nodes, "blocks", [helper.make_tensor_value_info("x", et, X_SHAPE)],
                              [helper.make_tensor_value_info(out, et, (1, 8, 4, 4))], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_blocks_merge_and_preserve_outputs(dtype):
    model = blocks_model(dtype)
    fused, report = fuse_model(model, blocks=True)
    onnx.checker.check_model(fused)
    plugins = [n for n in fused.graph.node if n.domain == "autotune"]
    assert [n.op_type for n in plugins] == ["ir_conv2d", "ir_conv2d", "dwpw_conv2d"]
    assert len(fused.graph.node) == 3                   # the Add went into the first block
    first, second, pair = (attrs(n) for n in plugins)
    assert first["expansion"] == 4 and first["C_out"] == 16 and first["act2"] == b"none"
    assert second["stride"] == 2 and second["C_out"] == 24
    assert pair["act"] == b"relu" and pair["act2"] == b"relu"
    assert [f.op_type for f in report.fused] == ["ir_conv2d", "ir_conv2d", "dwpw_conv2d"]
    assert "add1" in report.fused[0].nodes
    # only the blocks' own weights remain
    assert {t.name for t in fused.graph.initializer} == {i for n in plugins for i in n.input[1:]}
    f = {"x": np.random.default_rng(2).uniform(-1, 1, X_SHAPE).astype(dtype)}
    want = ReferenceEvaluator(model).run(None, f)[0]
    got = ReferenceEvaluator(fused, new_ops=[ir_conv2d, dwpw_conv2d]).run(None, f)[0]
    tol = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)


def test_blocks_follow_the_tuned_plan(tmp_path):
    """With a database, a block is merged only when its plan there is the one fused kernel."""
    model = blocks_model()
    store = Store(tmp_path / "b.db")
    gid = store.add_gpu(GPU)
    from autotune.plans import candidate_plans
    _, report = fuse_model(model, blocks=True)
    first = Problem("ir", 1, 16, 8, 8, C_out=16, k=3, expansion=4, act="relu6", dtype="float32", layout="nchw")
    assert report.fused[0].problem_key == first.key
    for depth, steps in candidate_plans(first):       # fused slow, stages fast: run it unfused
        for step in steps:
            if not kernels.families_for(step.problem):     # (a step no kernel fits, e.g. a wide fp32 pwdw: that plan is left out)
                continue
            family = kernels.families_for(step.problem)[0]
            store.add_problem(step.problem)
            store.add_trial(gid, step.problem, family.name, family.default_config(step.problem), OK,
                            time_us=100.0 if depth == 3 else 1.0)
    _, with_db = fuse_model(model, store=store, gpu=GPU["name"], blocks=True)
    assert first.key not in [f.problem_key for f in with_db.fused]
    assert any("inverted residual" in why and "separate kernels" in why for _, why in with_db.skipped)
    # the plan there is depth 2 (its tuned times: expand 1 + dwpw 1 < three stages 3 < fused 100): the
    # expand stays a pw plugin and the depthwise + project become a dwpw block
    ops = {f.name: f.op_type for f in with_db.fused}
    assert ops["ae"] == "pw_conv2d" and ops["ad"] == "dwpw_conv2d" and "ap" not in ops
