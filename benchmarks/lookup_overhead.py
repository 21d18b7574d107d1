"""Host overhead of calling a looked-up kernel (after the first call), on CuPy arrays and torch
tensors: host time of batches of back-to-back calls, the GPU drained between batches. Batches stay
well below the launch queue's depth, so the host never waits for the GPU and the figure is the
host's own time per call (with many more calls in a row, a tiny kernel's GPU time would be timed
instead). Every way of calling is measured in ROUNDS rounds, taken in turn, and each gets the median
of its rounds: the first measurement after a change of work (an import, another kind of call) runs
slower for a while. With programmatic dependent launch, the driver call alone is timed too, for scale.

    python3 benchmarks/lookup_overhead.py
"""
import statistics
import time
import warnings

import cupy
import numpy as np

import autotune
from autotune.driver_launch import cupy_parts
from autotune.problem import Problem
from autotune.reference import random_inputs

BATCH = 256        # calls per timed batch: far below the launch queue's ~1000 entries
ROUNDS = 3


def per_call_us(fn, batches=80):
    fn()
    times = []
    for _ in range(batches):
        cupy.cuda.Device().synchronize()
        t = time.perf_counter()
        for _ in range(BATCH):
            fn()
        times.append((time.perf_counter() - t) / BATCH * 1e6)
    cupy.cuda.Device().synchronize()
    return statistics.median(times)


def main():
    try:
        import torch
    except ImportError:
        torch = None
    p = Problem("dw", 1, 32, 8, 8, k=3, act="relu6", dtype="float16", layout="nhwc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = autotune.lookup(p)
    host = random_inputs(p, np.random.default_rng(0))
    x, w, b = (cupy.asarray(host[n]) for n in ("x", "w", "bias"))
    y = cupy.empty(p.output_shape, dtype=p.dtype)
    k(x, w, b, out=y)                       # compiles, and prepares the launch's arguments
    calls = {}
    if k.pdl:       # what the driver alone costs: cuLaunchKernelEx with the call's prepared arguments
        launch_ex, args = cupy_parts().launch_ex, k._launch_ex_args
        calls["bare cuLaunchKernelEx  "] = lambda: launch_ex(*args)
    calls["cupy arrays, out given "] = lambda: k(x, w, b, out=y)
    calls["cupy arrays, out alloc "] = lambda: k(x, w, b)
    if torch is not None:
        tx, tw, tb = (torch.as_tensor(a, device="cuda") for a in (x, w, b))
        ty = torch.empty(p.output_shape, dtype=torch.float16, device="cuda")
        calls["torch tensors, out given"] = lambda: k(tx, tw, tb, out=ty)
    rounds = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, fn in calls.items():
            rounds[name].append(per_call_us(fn))
    for name, times in rounds.items():
        print(f"{name}: {statistics.median(times):6.2f} us/call  (rounds: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
