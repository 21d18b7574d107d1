"""Lookup at inference on a GPU: tuned, nearest-shape and default kernels all match the reference,
on CuPy arrays and on torch tensors (channels_last too), on the caller's stream."""
import numpy as np
import pytest

import autotune
from autotune.kernels import depthwise
from autotune.problem import Problem
from autotune.reference import compare, random_inputs, reference
from autotune.store import OK, Store

pytestmark = pytest.mark.gpu


@pytest.fixture
def tuned_db(tmp_path):
    from autotune.lookup import current_gpu
    gpu = current_gpu()
    store = Store(tmp_path / "t.db")
    gid = store.add_gpu({**gpu, "sm_count": 1, "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 1e12})
    tuned = Problem("dw", 2, 24, 20, 20, k=3, act="relu6", dtype="float16", layout="nhwc")
    store.add_problem(tuned)
    config = {"vec": 8, "ch_per_block": 16, "tile_h": 4, "tile_w": 8, "out_h": 2, "out_w": 1, "adjacent_cols": False,
              "stage_input": True, "unroll_rows": True}
    assert depthwise.NHWC.check(tuned, config) is None
    store.add_trial(gid, tuned, "depthwise_nhwc", config, OK, time_us=1.0)
    return tmp_path / "t.db", tuned, config


def _check(kernel, problem, to_device):
    host = random_inputs(problem, np.random.default_rng(7))
    args = [to_device(host["x"]), to_device(host["w"]), to_device(host["bias"])]
    out = kernel(*args)
    import cupy
    cupy.cuda.Device().synchronize()
    ok, err = compare(cupy.asnumpy(cupy.asarray(out)), reference(problem, **host), problem.dtype)
    assert ok, err


def test_exact_nearest_and_default(tuned_db):
    import cupy
    db, tuned, config = tuned_db
    k = autotune.lookup(tuned, db=db)
    assert k.fallback == "exact" and k.config == config
    _check(k, tuned, cupy.asarray)
    near = tuned.replace(N=3, H=23, W=17)
    with pytest.warns(UserWarning, match="nearest tuned shape"):
        k2 = autotune.lookup(near, db=db)
    assert k2.config == config
    _check(k2, near, cupy.asarray)
    other = tuned.replace(C=20)           # vec 8 does not divide 20: the tuned config cannot serve
    assert other.C_out == 20
    with pytest.warns(UserWarning, match="default"):
        k3 = autotune.lookup(other, db=db)
    _check(k3, other, cupy.asarray)


def test_torch_tensors_on_current_stream(tuned_db):
    torch = pytest.importorskip("torch")
    db, tuned, _ = tuned_db
    k = autotune.lookup(tuned, db=db)
    host = random_inputs(tuned, np.random.default_rng(3))
    x = torch.from_numpy(host["x"]).cuda()                       # NHWC as a plain [N,H,W,C] tensor
    x_cl = x.permute(0, 3, 1, 2)                                 # the same memory as channels_last NCHW
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    w, b = torch.from_numpy(host["w"]).cuda(), torch.from_numpy(host["bias"]).cuda()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        y = k(x_cl, w, b)
    side.synchronize()
    assert y.shape == (tuned.N, tuned.C, tuned.H_out, tuned.W_out)
    assert y.is_contiguous(memory_format=torch.channels_last)
    ok, err = compare(y.permute(0, 2, 3, 1).cpu().numpy(), reference(tuned, **host), tuned.dtype)
    assert ok, err
    # the plain [N,H,W,C] shape into a given output, poisoned first
    out = torch.full((tuned.N, tuned.H_out, tuned.W_out, tuned.C), float("nan"), dtype=x.dtype, device="cuda")
    assert k(x, w, b, out=out) is out
    ok, err = compare(out.cpu().numpy(), reference(tuned, **host), tuned.dtype)
    assert ok, err
    with pytest.raises(ValueError, match="not densely stored"):
        k(x_cl.contiguous(), w, b)                               # NCHW order in an NCHW shape
    with pytest.raises(ValueError, match="CPU"):
        k(x.cpu(), w, b)


class _InterfaceOnly:
    """A GPU array known only by __cuda_array_interface__ (as Numba's are), wrapping a CuPy array."""

    def __init__(self, a):
        self.shape, self.__cuda_array_interface__ = a.shape, a.__cuda_array_interface__
        self._keep = a


def test_mixed_and_interface_only_arrays(tuned_db):
    """Arguments of different kinds in one call take the general path; every pointer must still be right."""
    torch = pytest.importorskip("torch")
    import cupy
    db, tuned, _ = tuned_db
    k = autotune.lookup(tuned, db=db)
    host = random_inputs(tuned, np.random.default_rng(11))
    want = reference(tuned, **host)
    x = torch.from_numpy(host["x"]).cuda()                       # plain [N,H,W,C]
    w, b = cupy.asarray(host["w"]), cupy.asarray(host["bias"])
    out = cupy.full(tuned.output_shape, cupy.nan, dtype=tuned.dtype)
    torch.cuda.synchronize()
    assert k(x, w, b, out=out) is out
    cupy.cuda.Device().synchronize()
    ok, err = compare(cupy.asnumpy(out), want, tuned.dtype)
    assert ok, err
    out2 = cupy.full(tuned.output_shape, cupy.nan, dtype=tuned.dtype)
    k(_InterfaceOnly(cupy.asarray(host["x"])), _InterfaceOnly(w), b, out=_InterfaceOnly(out2))
    cupy.cuda.Device().synchronize()
    ok, err = compare(cupy.asnumpy(out2), want, tuned.dtype)
    assert ok, err


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_blocks_run_at_every_fusion_depth(tmp_path, layout):
    """An inverted residual looked up as one fused kernel (nothing measured), as expand + fused
    dwpw, and as three kernels plus the residual add, as the measured times decide: every plan
    matches the block's reference, on CuPy arrays and torch tensors."""
    import cupy
    from autotune.kernels import families_for
    from autotune.lookup import TunedKernel, current_gpu
    from autotune.plans import BlockKernel, candidate_plans
    block = Problem("ir", 2, 16, 13, 11, C_out=16, k=3, expansion=6, act="relu6", dtype="float16", layout=layout)
    gpu = current_gpu()
    with pytest.warns(UserWarning, match="not tuned"):
        fused_kernel = autotune.lookup(block, db=tmp_path / "none.db")      # no database: fused default
    assert isinstance(fused_kernel, TunedKernel) and fused_kernel.family.name.startswith("fused_block")
    _check(fused_kernel, block, cupy.asarray)
    for depth, steps in candidate_plans(block)[1:]:      # (only the plans whose kernels exist in this layout)
        if not all(families_for(step.problem) for step in steps):
            continue
        name = "-".join(step.problem.op for step in steps)
        store = Store(tmp_path / f"{name}.db")
        gid = store.add_gpu({**gpu, "sm_count": 1, "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 1e12})
        for step in steps:
            family = families_for(step.problem)[0]
            store.add_problem(step.problem)
            store.add_trial(gid, step.problem, family.name, family.default_config(step.problem), OK, time_us=0.001)
        store.close()
        staged = autotune.lookup(block, db=tmp_path / f"{name}.db")
        assert isinstance(staged, BlockKernel) and staged.plan.steps == steps
        # the last 1x1 adds the input itself (three kernels, or pwdw then project); after the fused
        # dwpw half an add does
        assert staged.kernels[-1].add_residual == (steps[-1].problem.op == "pw")
        _check(staged, block, cupy.asarray)
        torch = pytest.importorskip("torch")
        _check(staged, block, lambda a: torch.as_tensor(a, device="cuda") if a is not None else None)


def test_plans_timed_whole_decide_the_lookup(tmp_path):
    """A sweep's plan pass: every plan whose kernels are tuned runs whole, passes the block's reference
    and gets a time; stored, the fastest is the one lookup runs."""
    pytest.importorskip("torch")
    from autotune.kernels import families_for
    from autotune.lookup import current_gpu
    from autotune.plan_timing import time_plans
    from autotune.plans import BlockKernel, candidate_plans, choose_plan, plan_name
    block = Problem("ir", 2, 16, 13, 11, C_out=16, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
    db = tmp_path / "plans.db"
    store = Store(db)
    gid = store.add_gpu({**current_gpu(), "sm_count": 1, "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 1e12})
    names = set()
    for _, steps in candidate_plans(block):
        names.add(plan_name(steps))
        for step in steps:
            family = families_for(step.problem)[0]
            store.add_problem(step.problem)
            store.add_trial(gid, step.problem, family.name, family.default_config(step.problem), OK, time_us=1.0)
    times = time_plans(block, db)
    assert {t["plan"] for t in times} == names == {"ir", "pw,dwpw", "pwdw,pw", "pw,dw,pw"}
    assert all(t["error"] is None and t["time_us"] > 0 and t["max_error"] <= 1 for t in times)
    store.set_plan_times(gid, block, times)
    store.close()
    fastest = min(times, key=lambda t: t["time_us"])["plan"]
    plan = choose_plan(block, Store(db, readonly=True), current_gpu())
    assert plan_name(plan.steps) == fastest and "timed whole" in plan.reason
    kernel = autotune.lookup(block, db=db)
    assert (plan_name(kernel.plan.steps) if isinstance(kernel, BlockKernel) else kernel.problem.op) == fastest
