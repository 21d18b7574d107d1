"""Fused blocks as Problems: validation, packed weights, the float64 reference of a whole block
(checked stage by stage against the direct loops) and BatchNorm folding."""
import numpy as np
import pytest

from autotune.batchnorm import fold_batchnorm
from autotune.problem import Problem, ProblemError
from autotune.reference import direct_reference, random_inputs, reference, split_parts


def ir(**kw):
    spec = dict(op="ir", N=2, C=4, H=7, W=6, C_out=4, k=3, stride=1, expansion=3, act="relu6")
    spec.update(kw)
    return Problem(**spec)


@pytest.mark.parametrize("kw, field", [
    (dict(C_out=None), "C_out"), (dict(expansion=0), "expansion"), (dict(k=4), "k"),
    (dict(stride=3), "stride"), (dict(act2="gelu"), "act2"), (dict(H=0), "H"), (dict(padding=3), "padding"),
])
def test_bad_blocks_name_the_field(kw, field):
    with pytest.raises(ProblemError) as e:
        ir(**kw)
    assert e.value.field == field


def test_only_blocks_take_block_fields():
    with pytest.raises(ProblemError) as e:
        Problem("dwpw", 1, 8, 8, 8, C_out=8, k=3, expansion=2)
    assert e.value.field == "expansion"
    with pytest.raises(ProblemError) as e:
        Problem("dw", 1, 8, 8, 8, k=3, act2="relu")
    assert e.value.field == "act2"
    with pytest.raises(ProblemError) as e:      # pwdw ends with its depthwise: no second activation
        Problem("pwdw", 1, 8, 8, 8, C_out=16, k=3, act="relu6", act2="relu6")
    assert e.value.field == "act2" and "dwpw and ir" in str(e.value)
    with pytest.raises(ProblemError) as e:
        Problem("pwdw", 1, 8, 8, 8, k=3)
    assert e.value.field == "C_out"


def test_stages_and_packed_weights():
    p = ir()
    assert [s.op for s in p.stages()] == ["pw", "dw", "pw"] and p.hidden == 12 and p.residual
    assert [s.act for s in p.stages()] == ["relu6", "relu6", "none"]
    assert p.weight_parts == [(12, 4, 1, 1), (12, 1, 3, 3), (4, 12, 1, 1)]
    assert p.weight_shape == (12 * 4 + 12 * 9 + 4 * 12,) and p.bias_shape == (12 + 12 + 4,)
    assert p.output_shape == (2, 4, 7, 6)
    assert not ir(stride=2).residual and not ir(C_out=8).residual
    assert [s.op for s in ir(expansion=1).stages()] == ["dw", "pw"]
    dwpw = Problem("dwpw", 1, 8, 9, 9, C_out=16, k=5, stride=2, act="relu", act2="relu", layout="nhwc")
    assert dwpw.key == "dwpw k5 s2 p2 N1 C8->16 9x9 relu/relu bias float32 nhwc"
    assert dwpw.output_shape == (1, 5, 5, 16) and not dwpw.residual
    assert ir().key == "ir t3 k3 s1 p1 N2 C4->4 7x6 relu6/none bias float32 nchw"
    assert ir().flops() == sum(s.flops() for s in ir().stages())
    assert ir().min_bytes() == 4 * (2 * 4 * 7 * 6 * 2 + 204 + 28)
    pwdw = Problem("pwdw", 2, 4, 7, 6, C_out=12, k=3, stride=2, act="relu6", layout="nhwc")
    assert [(s.op, s.C, s.C_out, s.act) for s in pwdw.stages()] == [("pw", 4, 12, "relu6"), ("dw", 12, 12, "relu6")]
    assert pwdw.stages() == ir(stride=2, layout="nhwc").stages()[:2] and pwdw.hidden == 12
    assert pwdw.weight_parts == [(12, 4, 1, 1), (12, 1, 3, 3)] and pwdw.bias_shape == (24,)
    assert pwdw.output_shape == (2, 4, 3, 12) and not pwdw.residual
    assert pwdw.key == "pwdw k3 s2 p1 N2 C4->12 7x6 relu6 bias float32 nhwc"


@pytest.mark.parametrize("problem", [
    ir(), ir(stride=2, C_out=6, layout="nhwc"), ir(expansion=1, C_out=5, bias=False),
    Problem("dwpw", 2, 5, 6, 7, C_out=3, k=5, stride=2, act="relu", act2="relu6", layout="nhwc"),
    Problem("pwdw", 2, 3, 7, 5, C_out=8, k=3, stride=2, act="relu6", layout="nhwc"),
], ids=lambda p: p.key)
def test_block_reference_is_its_stages_plus_residual(problem):
    rng = np.random.default_rng(0)
    a = random_inputs(problem, rng)
    assert a["w"].shape == problem.weight_shape
    ws = split_parts(a["w"], problem.weight_parts)
    bs = split_parts(a["bias"], problem.bias_parts) if problem.bias else [None] * len(ws)
    y = a["x"]
    for stage, w, b in zip(problem.stages(), ws, bs):
        y = direct_reference(stage, y, w, b)
    if problem.residual:
        y = y + a["x"]
    np.testing.assert_allclose(reference(problem, **a), y, rtol=1e-12, atol=1e-12)


def test_batchnorm_folds_into_the_conv():
    rng = np.random.default_rng(1)
    p = Problem("pw", 2, 6, 5, 5, C_out=4)
    x, w, b = rng.normal(size=p.input_shape), rng.normal(size=p.weight_shape), rng.normal(size=4)
    gamma, beta, mean, var = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)
    conv = reference(p, x, w, b)
    bn = (conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-3) \
        * gamma[None, :, None, None] + beta[None, :, None, None]
    fw, fb = fold_batchnorm(w, b, gamma, beta, mean, var, eps=1e-3)
    np.testing.assert_allclose(reference(p, x, fw, fb), bn, rtol=1e-10, atol=1e-10)
    fw0, fb0 = fold_batchnorm(w, None, gamma, beta, mean, var, eps=1e-3)
    np.testing.assert_allclose(fb0, fb - b * gamma / np.sqrt(var + 1e-3))
    with pytest.raises(ValueError, match="var"):
        fold_batchnorm(w, b, gamma, beta, mean, var[:3])
