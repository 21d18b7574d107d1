"""Fusion depth of a block, without a GPU: the plan follows the measured times in the database
(fused kernel vs the stages' kernels plus the residual add), and blocks no fused kernel fits run
unfused."""
import pytest

from autotune.kernels import fused
from autotune.plans import choose_plan, plan_times
from autotune.problem import Problem
from autotune.store import OK, Store

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
        "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 2.5e12}
BLOCK = Problem("ir", 16, 24, 56, 56, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")


def _store(tmp_path, fused_us, stage_us):
    s = Store(tmp_path / "p.db")
    gid = s.add_gpu(H100)
    if fused_us is not None:
        s.add_problem(BLOCK)
        s.add_trial(gid, BLOCK, "fused_block_tc", fused.TENSOR_CORE.default_config(BLOCK), OK, time_us=fused_us)
    for stage, t in zip(BLOCK.stages(), stage_us):
        s.add_problem(stage)
        s.add_trial(gid, stage, "x", {"n": 1}, OK, time_us=t)
    return s


def test_faster_fused_kernel_wins(tmp_path):
    plan = choose_plan(BLOCK, _store(tmp_path, 20.0, [10.0, 10.0, 10.0]), H100)
    assert plan.depth == plan.max_depth == 3 and plan.stages == (BLOCK,) and plan.estimate_us == 20.0


def test_faster_stages_win_and_pay_for_the_residual_add(tmp_path):
    store = _store(tmp_path, 40.0, [10.0, 10.0, 10.0])
    add_us = 3 * 16 * 24 * 56 * 56 * 2 / 2.5e12 * 1e6
    assert plan_times(BLOCK, store, H100) == {"fused": 40.0, "unfused": pytest.approx(30.0 + add_us)}
    plan = choose_plan(BLOCK, store, H100)
    assert plan.depth == 1 and [s.op for s in plan.stages] == ["pw", "dw", "pw"]
    assert plan.estimate_us == pytest.approx(30.0 + add_us) and "unfused" in plan.reason


def test_untimed_stage_means_fused(tmp_path):
    plan = choose_plan(BLOCK, _store(tmp_path, 40.0, [10.0, 10.0]), H100)
    assert plan.depth == 3


def test_nothing_measured_runs_fused_where_a_kernel_fits(tmp_path):
    store = Store(tmp_path / "empty.db")
    assert choose_plan(BLOCK, store, H100).depth == 3
    wide = Problem("ir", 1, 96, 14, 14, C_out=160, k=3, stride=2, expansion=6, act="relu6", dtype="float32",
                   layout="nhwc")
    plan = choose_plan(wide, store, H100)
    assert plan.depth == 1 and plan.max_depth == 3 and "no fused kernel" in plan.reason


def test_single_convolution_is_its_own_plan():
    dw = BLOCK.stages()[1]
    assert choose_plan(dw, None, H100).stages == (dw,)
