"""The TF32 option: float32 problems that allow TF32 are problems of their own (key, store, tolerance,
baselines), only they get the TF32 tensor-core family, and every kind of its variant compiles."""
import pytest

from autotune import codegen, compiler, kernels
from autotune.kernels.pointwise import TF32_FAMILY
from autotune.models import model_problems
from autotune.problem import Problem, ProblemError
from autotune.reference import RTOL
from autotune.searchspace import valid_configs
from autotune.store import Store


def fp32_nhwc(**kw):
    fields = dict(op="pw", N=2, C=96, H=14, W=14, C_out=24, dtype="float32", layout="nhwc")
    return Problem(**{**fields, **kw})


def test_tf32_is_a_float32_option_with_its_own_key_and_tolerance():
    exact, tf32 = fp32_nhwc(), fp32_nhwc(tf32=True)
    assert tf32.key == exact.key + " tf32" and exact != tf32
    assert exact.tolerance == "float32" and tf32.tolerance == "tf32" and RTOL["tf32"] > RTOL["float32"]
    assert Problem.from_dict(tf32.to_dict()) == tf32
    with pytest.raises(ProblemError) as info:
        fp32_nhwc(dtype="float16", tf32=True)
    assert info.value.field == "tf32"
    with pytest.raises(ProblemError) as info:
        fp32_nhwc(tf32=1)
    assert info.value.field == "tf32"


def test_a_tf32_block_allows_it_in_its_1x1_stages_only():
    block = Problem("ir", N=1, C=16, H=8, W=8, C_out=16, k=3, act="relu6", expansion=6, dtype="float32",
                    layout="nhwc", tf32=True)
    assert [(s.op, s.tf32) for s in block.stages()] == [("pw", True), ("dw", False), ("pw", True)]


def test_only_tf32_problems_get_the_tf32_family():
    exact, tf32 = fp32_nhwc(), fp32_nhwc(tf32=True)
    assert TF32_FAMILY not in kernels.families_for(exact)
    assert TF32_FAMILY in kernels.families_for(tf32)
    assert {f.name for f in kernels.families_for(exact)} <= {f.name for f in kernels.families_for(tf32)}
    assert TF32_FAMILY.applies(fp32_nhwc(layout="nchw", tf32=True))
    assert "allow TF32" in TF32_FAMILY.check(exact, TF32_FAMILY.default_config(tf32))


def test_store_keeps_the_option(tmp_path):
    store = Store(tmp_path / "t.db")
    for p in (fp32_nhwc(), fp32_nhwc(tf32=True)):
        store.add_problem(p)
        assert store.problem(p.key) == p


def test_sweep_adds_tf32_twins_of_float32_1x1_problems_only():
    plain = model_problems("mobilenet_v2", ops=("dw", "pw"), batches=(1,), dtypes=("float16", "float32"),
                           layouts=("nhwc",))
    twins = model_problems("mobilenet_v2", ops=("dw", "pw"), batches=(1,), dtypes=("float16", "float32"),
                           layouts=("nhwc",), tf32=True)
    extra = [p for p in twins if p not in plain]
    assert extra and all(p.tf32 and p.op == "pw" and p.dtype == "float32" for p in extra)
    assert {p.replace(tf32=False) for p in extra} == {p for p in plain if p.op == "pw" and p.dtype == "float32"}


@pytest.mark.parametrize("size", [dict(C=1, C_out=1, H=1, W=1), dict(C=37, C_out=19), dict(C=576, C_out=160, H=7, W=7)])
def test_default_is_valid_and_space_not_empty(size):
    p = fp32_nhwc(tf32=True, **size)
    assert TF32_FAMILY.check(p, TF32_FAMILY.default_config(p)) is None
    assert valid_configs(TF32_FAMILY, p)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_variant_compiles_with_and_without_the_residual(arch):
    sources = []
    for spec in (dict(C=96, C_out=24, act="none"), dict(C=37, C_out=19, act="relu6", bias=False),
                 dict(C=40, C_out=24, act="relu", layout="nchw")):
        p = fp32_nhwc(tf32=True, **spec)
        for config in valid_configs(TF32_FAMILY, p):
            sources += [codegen.render(TF32_FAMILY, p, config).code,
                        codegen.render(TF32_FAMILY, p, config, add_residual=True).code]
    results = compiler.compile_many(sources, arch, jobs=2)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, str(errors[0])[:2000]
    assert all(r.spill_bytes <= 64 and r.registers <= 255 for r in results)
    assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in sources[0]
