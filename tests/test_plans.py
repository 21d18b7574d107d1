"""Fusion depth of a block, without a GPU: the plan follows the measured times in the database
(one fused kernel; expand + fused dwpw; fused pwdw + project; or the stages' kernels, plus the residual
add), and blocks no fused kernel fits run unfused."""
import pytest

from autotune.kernels import fused
from autotune.plans import adds_residual, candidate_plans, choose_plan, plan_name, plan_time
from autotune.problem import Problem
from autotune.store import OK, Store

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
        "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 2.5e12}
BLOCK = Problem("ir", 16, 24, 56, 56, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
HALF = Problem("dwpw", 16, 144, 56, 56, C_out=24, k=3, act="relu6", dtype="float16", layout="nhwc")
FIRST_HALF = Problem("pwdw", 16, 24, 56, 56, C_out=144, k=3, act="relu6", dtype="float16", layout="nhwc")
ADD_US = 3 * 16 * 24 * 56 * 56 * 2 / 2.5e12 * 1e6        # an add after the fused dwpw half: 2 reads, 1 write
EPILOGUE_US = ADD_US / 3                                   # the last 1x1 adds the input itself: 1 more read


def _store(tmp_path, fused_us, stage_us, half_us=None, first_half_us=None):
    s = Store(tmp_path / "p.db")
    gid = s.add_gpu(H100)
    timed = [(BLOCK, fused_us), (HALF, half_us), (FIRST_HALF, first_half_us)] + list(zip(BLOCK.stages(), stage_us))
    for problem, t in timed:
        if t is not None:
            s.add_problem(problem)
            s.add_trial(gid, problem, "x", {"n": 1}, OK, time_us=t)
    return s


def test_candidates_from_deepest_down():
    plans = candidate_plans(BLOCK)
    assert [d for d, _ in plans] == [3, 2, 2, 1]
    assert [s.problem for s in plans[1][1]] == [BLOCK.stages()[0], HALF]
    assert [s.parts for s in plans[1][1]] == [(0, 1), (1, 3)]
    assert [s.problem for s in plans[2][1]] == [FIRST_HALF, BLOCK.stages()[2]]
    assert [s.parts for s in plans[2][1]] == [(0, 2), (2, 3)]
    assert FIRST_HALF.stages() == BLOCK.stages()[:2]     # the same convolutions, the same weights
    assert [s.problem.op for s in plans[3][1]] == ["pw", "dw", "pw"]
    dwpw_plans = candidate_plans(HALF)
    assert [d for d, _ in dwpw_plans] == [2, 1]


def test_faster_fused_kernel_wins(tmp_path):
    plan = choose_plan(BLOCK, _store(tmp_path, 20.0, [10.0, 10.0, 10.0], half_us=15.0), H100)
    assert plan.depth == plan.max_depth == 3 and [s.problem for s in plan.steps] == [BLOCK]
    assert plan.estimate_us == 20.0


def test_expand_then_fused_half(tmp_path):
    store = _store(tmp_path, 40.0, [10.0, 10.0, 10.0], half_us=12.0)
    plan = choose_plan(BLOCK, store, H100)
    assert plan.depth == 2 and plan.estimate_us == pytest.approx(22.0 + ADD_US)
    assert "depth 3 (ir): 40.0 us" in plan.reason and plan.reason.startswith("depth 2 (pw, dwpw)")


def test_fused_first_half_then_project_adds_the_residual_itself(tmp_path):
    store = _store(tmp_path, 40.0, [10.0, 10.0, 10.0], half_us=15.0, first_half_us=8.0)
    plan = choose_plan(BLOCK, store, H100)
    assert [s.problem for s in plan.steps] == [FIRST_HALF, BLOCK.stages()[2]]
    assert adds_residual(plan.steps[-1].problem)
    assert plan.depth == 2 and plan.estimate_us == pytest.approx(18.0 + EPILOGUE_US)
    assert plan.reason.startswith("depth 2 (pwdw, pw): ")


def test_faster_stages_win_and_pay_for_the_residual_add(tmp_path):
    store = _store(tmp_path, 40.0, [10.0, 10.0, 10.0], half_us=25.0)
    steps = candidate_plans(BLOCK)[-1][1]
    assert adds_residual(steps[-1].problem) and not adds_residual(HALF)
    assert plan_time(BLOCK, steps, store, H100) == pytest.approx(30.0 + EPILOGUE_US)
    plan = choose_plan(BLOCK, store, H100)
    assert plan.depth == 1 and plan.estimate_us == pytest.approx(30.0 + EPILOGUE_US)


def test_untimed_kernels_leave_a_plan_out(tmp_path):
    plan = choose_plan(BLOCK, _store(tmp_path, 40.0, [10.0, 10.0]), H100)
    assert plan.depth == 3


def test_nothing_measured_runs_the_deepest_plan_that_exists(tmp_path):
    store = Store(tmp_path / "empty.db")
    assert choose_plan(BLOCK, store, H100).depth == 3
    assert choose_plan(BLOCK, None, H100).depth == 3
    wide = Problem("ir", 1, 96, 14, 14, C_out=160, k=3, stride=2, expansion=6, act="relu6", dtype="float32",
                   layout="nhwc")
    assert not fused.SIMT.applies(wide)
    plan = choose_plan(wide, store, H100)
    assert plan.depth < plan.max_depth == 3 and "nothing measured" in plan.reason


def test_single_convolution_is_its_own_plan():
    dw = BLOCK.stages()[1]
    plan = choose_plan(dw, None, H100)
    assert [s.problem for s in plan.steps] == [dw] and plan.max_depth == 1


def test_plans_timed_whole_win_over_estimates(tmp_path):
    store = _store(tmp_path, 40.0, [10.0, 10.0, 10.0], half_us=15.0, first_half_us=8.0)   # estimates: pwdw,pw
    gid = store.gpus()[0]["id"]
    store.set_plan_times(gid, BLOCK, [{"plan": "pw,dw,pw", "time_us": 12.0, "max_error": 0.1},
                                      {"plan": "pwdw,pw", "time_us": 14.0, "max_error": 0.1}])
    plan = choose_plan(BLOCK, store, H100)
    assert plan_name(plan.steps) == "pw,dw,pw" and plan.estimate_us == 12.0
    assert plan.reason == "depth 1 (pw, dw, pw): 12.0 us timed whole (depth 2 (pwdw, pw): 14.0 us)"
    store.set_plan_times(gid, BLOCK, [{"plan": "pwdw,pw", "time_us": 14.0}])     # a new plan pass replaces all
    assert store.plan_times(gid, BLOCK.key) == {"pwdw,pw": 14.0}
    assert plan_name(choose_plan(BLOCK, store, H100).steps) == "pwdw,pw"
    assert store.plan_times(gid, HALF.key) == {}
    assert "estimated" in choose_plan(HALF, store, H100).reason


def test_pwdw_without_a_fused_kernel_runs_as_two_kernels():
    """The fused expand + depthwise runs on tensor cores in fp16 NHWC and on fused_block elsewhere; a
    pwdw block that no fused kernel fits (a wide fp32 one), and an inverted residual's pwdw plan with
    it, fall back to kernels that exist."""
    from autotune import kernels
    assert plan_name(choose_plan(FIRST_HALF, None, H100).steps) == "pwdw"                          # fp16 NHWC
    assert plan_name(choose_plan(FIRST_HALF.replace(layout="nchw"), None, H100).steps) == "pwdw"   # fused_block
    wide = Problem("pwdw", 16, 96, 14, 14, C_out=576, k=3, stride=2, act="relu6", dtype="float32", layout="nhwc")
    assert kernels.families_for(wide) == []
    assert [(d, [s.problem.op for s in steps]) for d, steps in candidate_plans(wide)] == [(2, ["pwdw"]), (1, ["pw", "dw"])]
    plan = choose_plan(wide, None, H100)
    assert plan.depth == 1 and "nothing measured" in plan.reason


def test_a_block_no_family_runs_whole_runs_as_its_kernels():
    """MobileNetV2's widest fp32 block fits no one-kernel family (it stages the input tile with all its
    channels) but each of its convolutions has one: the sweep tunes it (its plans) and lookup runs it."""
    from autotune import kernels
    wide = Problem("ir", 16, 160, 7, 7, C_out=320, k=3, expansion=6, act="relu6", dtype="float32", layout="nhwc")
    assert kernels.families_for(wide) == [] and all(kernels.families_for(s) for s in wide.stages())
    assert kernels.runnable([wide, BLOCK]) == ([wide, BLOCK], [])
    assert [d for d, _ in candidate_plans(wide)][-1] == 1
