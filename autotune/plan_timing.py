"""Timing a block's plans whole: each candidate plan whose kernels are all tuned on this GPU runs as
lookup would run it - its kernels back to back on one stream, intermediates in fresh buffers - checked
against the float64 reference of the whole block, then timed like the baselines (CUDA-graph replay
over rotating inputs). A sweep stores the times; plans.choose_plan prefers them to estimates.

Runs in a sweep's GPU worker process and needs PyTorch (its graphs capture our kernels' allocations).
"""
from __future__ import annotations

from . import plans
from .problem import Problem
from .reference import compare, reference
from .store import Store, gpu_id


def time_plans(problem: Problem, db, device_id: int = 0) -> list[dict]:
    """[{plan, time_us, max_error, kernels}] for every plan of `problem` whose kernels are all tuned
    (exactly this shape) on this GPU in the database at `db`; a plan whose output fails the check gets
    time_us None and its error. Empty without PyTorch."""
    from .baselines import torch_available, torch_graph_time, torch_sets
    if not torch_available():
        return []
    import torch
    from .lookup import current_gpu, plan_kernel
    gpu = current_gpu(device_id)
    store = Store(db, readonly=True)
    try:
        gid = gpu_id(gpu)
        sets = torch_sets(problem)
        x, _, w, b = sets[0]

        def host(t):       # torch's NCHW-shaped tensor -> the problem's layout, as the reference takes it
            t = t.permute(0, 2, 3, 1) if problem.layout == "nhwc" and t.dim() == 4 else t
            return t.float().cpu().numpy()
        expected = reference(problem, host(x), host(w), host(b) if problem.bias else None)
        out = []
        for depth, steps in plans.candidate_plans(problem):
            if any(store.best(gid, s.problem.key) is None for s in steps):
                continue              # a kernel of it is not tuned here: lookup would fall back
            plan = plans.Plan(depth, len(problem.stages()), steps, None, plans.describe(depth, steps))
            kernel = plan_kernel(problem, plan, store, gpu)
            with torch.no_grad():
                y = kernel(x, w, b).fill_(float("nan"))      # poisoned: an unwritten element fails
                ok, err = compare(host(kernel(x, w, b, out=y)), expected, problem.tolerance)
                t = torch_graph_time(torch, lambda i: kernel(sets[i][0], sets[i][2], sets[i][3]), len(sets)) \
                    if ok else None
            out.append({"plan": plans.plan_name(steps), "time_us": t, "max_error": err, "kernels": repr(kernel),
                        "error": None if ok else f"fails the reference (worst error / tolerance {err:.3g})"})
        return out
    finally:
        store.db.conn.close()
