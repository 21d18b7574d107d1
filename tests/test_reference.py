"""The vectorized float64 reference against the loop-by-loop definition, and the comparison that
holds kernels to their tolerance."""
import itertools

import numpy as np
import pytest

from autotune.problem import Problem
from autotune.reference import RTOL, compare, direct_reference, random_inputs, reference

ACTS = ("none", "relu", "relu6")


def _dw_cases():
    """Every (k, padding) pair at both strides; layout, bias and activation cycle through them."""
    combos = [(k, s, p) for k in (3, 5, 7) for s in (1, 2) for p in range(k)]
    cycle = itertools.cycle(itertools.product(("nchw", "nhwc"), (True, False), ACTS))
    for i, (k, s, pad) in enumerate(combos):
        layout, bias, act = next(cycle)
        # Odd sizes, H != W, sizes not a multiple of the stride, at least one output pixel.
        H, W = k + 2 + (i % 2) * 2, k + 4 + (i % 3)
        yield Problem("dw", N=2, C=3, H=H, W=W, k=k, stride=s, padding=pad, bias=bias, act=act,
                      layout=layout, dtype=("float32", "float16")[i % 2])


def _pw_cases():
    for (layout, bias, act), dtype in zip(itertools.product(("nchw", "nhwc"), (True, False), ACTS),
                                          itertools.cycle(("float32", "float16"))):
        yield Problem("pw", N=2, C=5, H=3, W=7, C_out=4, bias=bias, act=act, layout=layout, dtype=dtype)


CASES = list(_dw_cases()) + list(_pw_cases())


def test_cases_cover_the_grid():
    dws = [p for p in CASES if p.op == "dw"]
    assert {(p.k, p.stride, p.padding) for p in dws} == {
        (k, s, p) for k in (3, 5, 7) for s in (1, 2) for p in range(k)}
    for p in (dws, [p for p in CASES if p.op == "pw"]):
        assert {(q.layout, q.bias, q.act) for q in p} == set(itertools.product(("nchw", "nhwc"), (True, False), ACTS))
    assert any(p.H != p.W and p.H % 2 and p.W % 2 for p in dws)


def _inputs(problem, seed):
    rng = np.random.default_rng(seed)
    arrays = random_inputs(problem, rng)
    # Larger weights so that relu6 clips some outputs at 6 and relu zeroes some.
    arrays["w"] = (arrays["w"].astype(np.float64) * 8).astype(problem.dtype)
    return arrays


@pytest.mark.parametrize("problem", CASES, ids=lambda p: p.key)
def test_reference_matches_definition(problem):
    a = _inputs(problem, seed=len(CASES) + CASES.index(problem))
    fast = reference(problem, a["x"], a["w"], a["bias"])
    slow = direct_reference(problem, a["x"], a["w"], a["bias"])
    assert fast.dtype == np.float64
    assert fast.shape == slow.shape == problem.output_shape
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    if problem.act == "relu":
        assert fast.min() == 0.0 and fast.max() > 0
    if problem.act == "relu6":
        assert fast.min() == 0.0 and fast.max() == 6.0
    if problem.act == "none":
        assert fast.min() < 0


def test_reference_by_hand():
    # One 3x3 channel, all-ones weights, padding 1: each output sums its 3x3 neighbourhood.
    p = Problem("dw", N=1, C=1, H=3, W=3, k=3, bias=True, act="none")
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 3, 3), np.float32)
    y = reference(p, x, w, np.array([0.5]))
    expected = np.array([[8, 15, 12], [21, 36, 27], [20, 33, 24]]) + 0.5
    np.testing.assert_array_equal(y[0, 0], expected)
    # stride 2 keeps the corners.
    y2 = reference(p.replace(stride=2), x, w, np.array([0.5]))
    np.testing.assert_array_equal(y2[0, 0], expected[::2, ::2])
    # relu6 clips.
    y6 = reference(p.replace(act="relu6"), x, w, np.array([0.5]))
    np.testing.assert_array_equal(y6[0, 0], np.minimum(expected, 6))
    # pointwise: a matrix product over channels, NHWC in, NHWC out.
    q = Problem("pw", N=1, C=2, H=1, W=2, C_out=3, bias=False, layout="nhwc")
    xq = np.array([[[[1, 2], [3, 4]]]], np.float32)             # (N, H, W, C)
    wq = np.array([[1, 0], [0, 1], [1, 1]], np.float32)[:, :, None, None]
    np.testing.assert_array_equal(reference(q, xq, wq), [[[[1, 2, 3], [3, 4, 7]]]])


@pytest.mark.parametrize("problem", CASES[::5], ids=lambda p: p.key)
def test_random_inputs(problem):
    a = random_inputs(problem, np.random.default_rng(0))
    assert a["x"].shape == problem.input_shape and a["x"].dtype == np.dtype(problem.dtype)
    assert a["w"].shape == problem.weight_shape and a["w"].dtype == np.dtype(problem.dtype)
    if problem.bias:
        assert a["bias"].shape == problem.bias_shape and a["bias"].dtype == np.dtype(problem.dtype)
    else:
        assert a["bias"] is None
    assert np.abs(a["x"]).max() <= 1
    b = random_inputs(problem, np.random.default_rng(0))
    np.testing.assert_array_equal(a["x"], b["x"])


# ---- compare ----------------------------------------------------------------------------------
@pytest.fixture(params=["float32", "float16"])
def dtype(request):
    return request.param


def _ref():
    p = Problem("dw", N=2, C=4, H=6, W=5, k=3, layout="nhwc")
    a = random_inputs(p, np.random.default_rng(1))
    return reference(p, a["x"], a["w"], a["bias"])


def _tol(ref, dtype, index):
    return RTOL[dtype] * (abs(ref[index]) + np.abs(ref).max())


def test_compare_accepts_exact_and_storage_rounding(dtype):
    ref = _ref()
    assert compare(ref, ref, dtype) == (True, 0.0)
    ok, worst = compare(ref.astype(dtype), ref, dtype)       # a kernel's output, rounded on store
    assert ok and worst <= 1.0


def test_compare_fp32_tolerance_rejects_fp16_rounding():
    ref = _ref()
    ok, worst = compare(ref.astype(np.float16), ref, "float32")
    assert not ok and worst > 1


@pytest.mark.parametrize("factor,passes", [(0.5, True), (0.99, True), (1.5, False), (100, False)])
def test_compare_perturbation(dtype, factor, passes):
    ref = _ref()
    index = (1, 2, 3, 1)
    out = ref.copy()
    out[index] += factor * _tol(ref, dtype, index)
    ok, worst = compare(out, ref, dtype)
    assert ok is passes
    assert worst == pytest.approx(factor, rel=1e-6)
    out[index] = ref[index] - factor * _tol(ref, dtype, index)
    assert compare(out, ref, dtype)[0] is passes


def test_compare_rejects_nan(dtype):
    ref = _ref()
    out = ref.astype(dtype)
    out[0, 0, 0, 0] = np.nan
    ok, worst = compare(out, ref, dtype)
    assert ok is False
    assert np.isnan(worst)
    out = np.full_like(ref, np.nan)
    assert compare(out, ref, dtype)[0] is False


def test_compare_rejects_inf(dtype):
    ref = _ref()
    out = ref.copy()
    out[1, 1, 1, 1] = np.inf
    ok, worst = compare(out, ref, dtype)
    assert ok is False and worst == np.inf


def test_compare_rejects_wrong_shape(dtype):
    ref = _ref()
    assert compare(ref[:1], ref, dtype) == (False, float("inf"))
    # Same elements in another layout (NCHW instead of NHWC) are a wrong shape too.
    assert compare(ref.transpose(0, 3, 1, 2), ref, dtype)[0] is False
    assert compare(ref.reshape(-1), ref, dtype)[0] is False


def test_compare_all_zero_reference(dtype):
    ref = np.zeros((1, 2, 3, 3))
    assert compare(ref.astype(dtype), ref, dtype)[0] is True
    out = ref.copy()
    out[0, 0, 0, 0] = 1e-3
    assert compare(out, ref, dtype)[0] is False
