"""Problem: validation (each error names its field), defaults, shapes, identity and cost."""
import itertools

import pytest

from autotune.problem import Problem, ProblemError


def dw(**kw):
    spec = dict(op="dw", N=2, C=8, H=9, W=11, k=3)
    spec.update(kw)
    return Problem(**spec)


def pw(**kw):
    spec = dict(op="pw", N=2, C=8, H=9, W=11, C_out=16)
    spec.update(kw)
    return Problem(**spec)


def raises_on(field, make, **kw):
    with pytest.raises(ProblemError) as info:
        make(**kw)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}:")
    return info.value


# ---- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [dw, pw], ids=["dw", "pw"])
@pytest.mark.parametrize("field", ["N", "C", "H", "W"])
@pytest.mark.parametrize("value", [0, -1, -64])
def test_non_positive_sizes(make, field, value):
    raises_on(field, make, **{field: value})


@pytest.mark.parametrize("make", [dw, pw], ids=["dw", "pw"])
@pytest.mark.parametrize("field", ["N", "C", "H", "W"])
@pytest.mark.parametrize("value", [3.0, 2.5, "4", None, True, False])
def test_non_int_and_bool_sizes(make, field, value):
    raises_on(field, make, **{field: value})


@pytest.mark.parametrize("value", [0, -3, 2.0, "16", True])
def test_pointwise_c_out_must_be_a_positive_int(value):
    raises_on("C_out", pw, C_out=value)


def test_pointwise_needs_c_out():
    err = raises_on("C_out", pw, C_out=None)
    assert "C_out" in str(err)


def test_depthwise_c_out_must_equal_c():
    raises_on("C_out", dw, C=8, C_out=16)
    assert dw(C=8, C_out=8).C_out == 8


@pytest.mark.parametrize("field,value", [
    ("op", "conv3d"), ("op", "DW"),
    ("k", 1), ("k", 4), ("k", 9), ("k", 0),
    ("stride", 3), ("stride", 0),
    ("dtype", "bfloat16"), ("dtype", "float64"), ("dtype", "half"),
    ("layout", "chwn"), ("layout", "NCHW"),
    ("act", "gelu"), ("act", "silu"), ("act", None),
    ("bias", 1), ("bias", "yes"), ("bias", None),
])
def test_unsupported_choices_depthwise(field, value):
    raises_on(field, dw, **{field: value})


@pytest.mark.parametrize("field,value", [
    ("k", 3), ("stride", 2), ("padding", 1),
    ("dtype", "int8"), ("layout", "nc"), ("act", "tanh"), ("bias", 0),
])
def test_unsupported_choices_pointwise(field, value):
    raises_on(field, pw, **{field: value})


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("padding", [-1, "k", 1.0, True])
def test_padding_out_of_range(k, padding):
    if padding == "k":
        padding = k
    raises_on("padding", dw, k=k, H=32, W=32, padding=padding)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_every_padding_below_k_is_accepted(k):
    for padding in range(k):
        assert dw(k=k, H=8, W=8, padding=padding).padding == padding


def test_image_smaller_than_kernel():
    raises_on("H", dw, k=7, padding=0, H=5, W=32)
    with pytest.raises(ProblemError):
        dw(k=7, padding=0, H=32, W=5)
    # Exactly k (no padding) leaves one output pixel; padding lets a 1x1 image through.
    assert dw(k=7, padding=0, H=7, W=7).output_shape == (2, 8, 1, 1)
    assert dw(k=7, H=1, W=1).output_shape == (2, 8, 1, 1)


def test_image_narrower_than_kernel_names_w():
    raises_on("W", dw, k=7, padding=0, H=32, W=5)


@pytest.mark.parametrize("make,field,value", [
    (dw, "stride", True), (dw, "stride", 2.0), (dw, "k", 3.0), (pw, "stride", 1.0), (pw, "k", True)],
    ids=["dw-stride-True", "dw-stride-2.0", "dw-k-3.0", "pw-stride-1.0", "pw-k-True"])
def test_k_and_stride_must_be_ints(make, field, value):
    raises_on(field, make, **{field: value})


def test_problem_error_is_a_value_error():
    with pytest.raises(ValueError):
        dw(N=0)


def test_frozen():
    p = dw()
    with pytest.raises(Exception):
        p.C = 4


# ---- defaults ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5, 7])
def test_default_padding_is_half_the_kernel(k):
    assert dw(k=k).padding == k // 2
    assert dw(k=k) == dw(k=k, padding=k // 2)
    assert hash(dw(k=k)) == hash(dw(k=k, padding=k // 2))


def test_defaults():
    p = dw(C=24)
    assert p.C_out == 24
    assert (p.stride, p.bias, p.act, p.dtype, p.layout) == (1, True, "none", "float32", "nchw")
    q = pw()
    assert (q.k, q.stride, q.padding) == (1, 1, 0)
    assert pw(padding=0) == q


# ---- shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,hw_out", [
    (dict(k=3, stride=1, padding=1, H=7, W=9), (7, 9)),
    (dict(k=3, stride=2, padding=1, H=7, W=9), (4, 5)),
    (dict(k=3, stride=2, padding=0, H=7, W=9), (3, 4)),
    (dict(k=5, stride=1, padding=0, H=7, W=9), (3, 5)),
    (dict(k=5, stride=2, padding=2, H=13, W=10), (7, 5)),
    (dict(k=7, stride=2, padding=3, H=13, W=10), (7, 5)),
    (dict(k=7, stride=1, padding=1, H=11, W=8), (7, 4)),
    (dict(k=3, stride=2, padding=1, H=1, W=2), (1, 1)),
])
def test_depthwise_shapes(spec, hw_out):
    h_out, w_out = hw_out
    nchw = dw(N=3, C=5, layout="nchw", **spec)
    nhwc = dw(N=3, C=5, layout="nhwc", **spec)
    assert (nchw.H_out, nchw.W_out) == hw_out
    assert nchw.input_shape == (3, 5, spec["H"], spec["W"])
    assert nhwc.input_shape == (3, spec["H"], spec["W"], 5)
    assert nchw.output_shape == (3, 5, h_out, w_out)
    assert nhwc.output_shape == (3, h_out, w_out, 5)
    assert nchw.weight_shape == nhwc.weight_shape == (5, 1, spec["k"], spec["k"])
    assert nchw.bias_shape == (5,)
    assert dw(bias=False, **spec).bias_shape is None


def test_pointwise_shapes():
    nchw = pw(N=3, C=5, C_out=7, H=9, W=11)
    nhwc = pw(N=3, C=5, C_out=7, H=9, W=11, layout="nhwc")
    assert (nchw.H_out, nchw.W_out) == (9, 11)
    assert nchw.input_shape == (3, 5, 9, 11)
    assert nchw.output_shape == (3, 7, 9, 11)
    assert nhwc.input_shape == (3, 9, 11, 5)
    assert nhwc.output_shape == (3, 9, 11, 7)
    assert nchw.weight_shape == (7, 5, 1, 1)
    assert nchw.bias_shape == (7,)
    assert pw(bias=False).bias_shape is None


# ---- identity ---------------------------------------------------------------------------------
def test_key_text_is_stable():
    p = Problem("dw", N=16, C=32, H=112, W=112, k=3, act="relu6", dtype="float16", layout="nhwc")
    assert p.key == "dw k3 s1 p1 N16 C32 112x112 relu6 bias float16 nhwc"
    q = Problem("pw", N=1, C=32, H=56, W=28, C_out=64, bias=False)
    assert q.key == "pw 1x1 N1 C32->64 56x28 none float32 nchw"


def _grid():
    for k, s, pad, bias, act, dtype, layout, (H, W) in itertools.product(
            (3, 5, 7), (1, 2), (None, 0), (True, False), ("none", "relu", "relu6"),
            ("float32", "float16"), ("nchw", "nhwc"), ((9, 11), (11, 9))):
        yield dw(k=k, stride=s, padding=pad, bias=bias, act=act, dtype=dtype, layout=layout, H=H, W=W)
    for C_out, bias, act, dtype, layout in itertools.product(
            (8, 16), (True, False), ("none", "relu", "relu6"), ("float32", "float16"), ("nchw", "nhwc")):
        yield pw(C_out=C_out, bias=bias, act=act, dtype=dtype, layout=layout)
    for n, c in ((1, 8), (3, 8), (1, 9), (2, 9)):
        yield dw(N=n, C=c)


def test_keys_are_unique_and_deterministic():
    problems = list(_grid())
    assert len(set(problems)) == len(problems)
    keys = [p.key for p in problems]
    assert len(set(keys)) == len(keys)
    assert keys == [p.key for p in _grid()]


@pytest.mark.parametrize("problem", list(_grid())[::7], ids=lambda p: p.key)
def test_dict_round_trip(problem):
    d = problem.to_dict()
    assert set(d) >= {"op", "N", "C", "H", "W", "C_out", "k", "stride", "padding", "bias", "act",
                      "dtype", "layout"}
    again = Problem.from_dict(d)
    assert again == problem
    assert again.key == problem.key
    assert hash(again) == hash(problem)
    assert again.to_dict() == d


def test_from_dict_rejects_unknown_fields():
    d = dw().to_dict()
    d["groups"] = 8
    with pytest.raises(ProblemError) as info:
        Problem.from_dict(d)
    assert info.value.field == "groups"


def test_from_dict_validates():
    d = dw().to_dict()
    d["k"] = 4
    with pytest.raises(ProblemError) as info:
        Problem.from_dict(d)
    assert info.value.field == "k"


def test_replace_validates_and_keeps_the_rest():
    p = dw(k=5, act="relu")
    q = p.replace(dtype="float16")
    assert q.dtype == "float16" and q.k == 5 and q.act == "relu" and q.padding == 2
    with pytest.raises(ProblemError):
        p.replace(stride=4)


# ---- cost -------------------------------------------------------------------------------------
def test_min_bytes_and_flops_by_hand():
    # dw: H_out = (5 + 2 - 3)//2 + 1 = 3, W_out = (7 + 2 - 3)//2 + 1 = 4.
    # input 2*3*5*7 = 210, output 2*3*3*4 = 72, weights 3*3*3 = 27, bias 3: 312 halves.
    p = Problem("dw", N=2, C=3, H=5, W=7, k=3, stride=2, dtype="float16", layout="nhwc")
    assert (p.H_out, p.W_out) == (3, 4)
    assert p.itemsize == 2
    assert p.min_bytes() == 312 * 2
    assert p.flops() == 2 * 72 * 9
    assert p.replace(bias=False).min_bytes() == 309 * 2
    assert p.replace(dtype="float32").min_bytes() == 312 * 4
    # pw: input 1*4*2*3 = 24, output 1*6*2*3 = 36, weights 6*4 = 24, no bias: 84 floats.
    q = Problem("pw", N=1, C=4, H=2, W=3, C_out=6, bias=False)
    assert q.min_bytes() == 84 * 4
    assert q.flops() == 2 * 36 * 4
