"""Running kernels on the GPU: load, launch, verify against the reference, and time.

Everything here needs CuPy and a GPU; it runs inside worker processes (see workers.py) so a kernel
that faults cannot take the sweep down with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import kernels
from .compiler import Binary
from .driver_launch import launch_programmatic, programmatic_launch
from .problem import Problem
from .reference import compare, random_inputs, reference

ROTATE_BYTES = 256 << 20       # rotate input/output sets until they span several times any L2
MAX_SETS = 64
GRAPH_LAUNCHES = 64            # launches captured in one graph (whole sets, repeated as needed)
REPEATS = 7                    # graph replays timed; the median is reported


def cupy():
    import cupy as cp
    return cp


def load_function(binary: Binary, entry: str):
    """A CuPy kernel function from a cubin or PTX image."""
    cp = cupy()
    module = cp.cuda.function.Module()
    module.load(binary.image)
    return module.get_function(entry)   # the Function holds a reference to its module


def allow_dynamic_shared(fn, shared_bytes: int):
    """Opts `fn` in to `shared_bytes` of dynamic shared memory where that is more than the 48 KB every
    kernel gets (cudaFuncAttributeMaxDynamicSharedMemorySize). Not cached by handle: a freed module's
    handle can come back for another function."""
    if shared_bytes > kernels.MAX_SHARED_BYTES:
        from cupy_backends.cuda.api import driver
        driver.funcSetAttribute(fn.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_bytes)


def launch(fn, launch_cfg: kernels.Launch, x, w, bias, y, problem: Problem, stream=None, ldx=None, ldy=None,
           residual=None, programmatic: bool = False):
    """One launch; `residual` only for kernels rendered with add_residual. programmatic: with
    programmatic dependent launch, as lookup launches kernels on sm_90 (driver_launch.programmatic_launch)."""
    cp = cupy()
    allow_dynamic_shared(fn, launch_cfg.shared_mem)
    ptr = (lambda a: a.data.ptr if a is not None else 0)
    stream = stream or cp.cuda.get_current_stream()
    if programmatic:
        sizes = kernels.scalar_args(problem, ldx, ldy)
        launch_programmatic(fn, launch_cfg, (ptr(x), ptr(w), ptr(bias), ptr(y), *sizes,
                                             *((ptr(residual),) if residual is not None else ())), stream.ptr)
        return
    args = (np.uint64(ptr(x)), np.uint64(ptr(w)), np.uint64(ptr(bias)), np.uint64(ptr(y)),
            *(np.int32(v) for v in kernels.scalar_args(problem, ldx, ldy)),
            *((np.uint64(ptr(residual)),) if residual is not None else ()))
    fn(launch_cfg.grid, launch_cfg.block, args, shared_mem=launch_cfg.shared_mem, stream=stream)


@dataclass
class HostData:
    """Inputs of one problem and their float64 reference, made on the CPU."""
    problem: Problem
    arrays: dict
    ref: np.ndarray

    @classmethod
    def create(cls, problem: Problem, seed: int | None = None):
        arrays = random_inputs(problem, np.random.default_rng(seed))
        return cls(problem, arrays, reference(problem, **arrays))

    @property
    def n_sets(self) -> int:
        return max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / max(self.problem.min_bytes(), 1))))


@dataclass
class ProblemData:
    """Device buffers for one problem: several input/output sets to rotate through (set 0 holds the
    verified inputs) and the float64 reference, kept on the device for a fast comparison."""
    problem: Problem
    ref: object         # cupy float64 array
    sets: list          # [(x, w, bias, y)]

    @classmethod
    def create(cls, problem: Problem, seed: int | None = None):
        return cls.upload(HostData.create(problem, seed), seed)

    @classmethod
    def upload(cls, host: HostData, seed: int | None = None):
        cp = cupy()
        problem = host.problem
        first = tuple(cp.asarray(host.arrays[k]) if host.arrays[k] is not None else None
                      for k in ("x", "w", "bias"))
        sets = [first + (cp.empty(problem.output_shape, dtype=problem.dtype),)]
        gen = cp.random.default_rng(seed)
        for _ in range(host.n_sets - 1):
            # Fresh random data in every timing set (not zeros: zeros can run faster than real data).
            x, w, b, y = (cp.empty_like(a) if a is not None else None for a in sets[0])
            for a in (x, w, b):
                if a is not None:
                    a[...] = gen.uniform(-1, 1, a.shape, dtype=cp.float32).astype(a.dtype)
            sets.append((x, w, b, y))
        return cls(problem, cp.asarray(host.ref), sets)


def verify(fn, launch_cfg, data: ProblemData) -> tuple[bool, float]:
    """Poison the output with NaN, run once, compare with the float64 reference."""
    cp = cupy()
    x, w, b, y = data.sets[0]
    y.fill(cp.nan)
    launch(fn, launch_cfg, x, w, b, y, data.problem)
    cp.cuda.get_current_stream().synchronize()
    return compare(y, data.ref, data.problem.tolerance)


def time_graph(launch_set, n_sets: int) -> float:
    """Median microseconds per launch: `launch_set(i, stream)` launches on buffer set i; a CUDA graph
    of GRAPH_LAUNCHES launches cycling through the sets is replayed REPEATS times after warm-up."""
    cp = cupy()
    stream = cp.cuda.Stream(non_blocking=True)
    per_graph = max(n_sets, GRAPH_LAUNCHES // n_sets * n_sets)
    with stream:
        for i in range(n_sets):                     # warm-up: module load, caches, clocks
            launch_set(i, stream)
        stream.begin_capture()
        for i in range(per_graph):
            launch_set(i % n_sets, stream)
        graph = stream.end_capture()
        graph.launch(stream)
        start, end = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for _ in range(REPEATS):
            start.record(stream)
            graph.launch(stream)
            end.record(stream)
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) * 1000.0 / per_graph)
    return float(np.median(times))


def time_kernel(fn, launch_cfg, data: ProblemData, programmatic: bool = False) -> float:
    def launch_set(i, stream):
        x, w, b, y = data.sets[i]
        launch(fn, launch_cfg, x, w, b, y, data.problem, stream=stream, programmatic=programmatic)
    return time_graph(launch_set, len(data.sets))


def measure(binary: Binary, family, config: dict, data: ProblemData) -> dict:
    """Verify, then time one compiled configuration, launched as lookup will launch it (with
    programmatic dependent launch on sm_90: a launch's start overlaps the previous one's end, never its
    memory traffic, since every kernel first waits for its predecessor's writes). Returns a trial record."""
    fn = load_function(binary, family.entry)
    launch_cfg = family.launch(data.problem, config)
    ok, err = verify(fn, launch_cfg, data)
    if not ok:
        return {"status": "wrong", "error": f"output differs from the reference (worst error / tolerance = {err:.3g})",
                "time_us": None, "max_error": err}
    time_us = time_kernel(fn, launch_cfg, data, programmatic=programmatic_launch(binary.arch))
    return {"status": "ok", "error": None, "time_us": time_us, "max_error": err}
