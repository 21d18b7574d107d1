"""A sweep: tune many problems on one GPU and store everything, resumable at any point.

Several problems are tuned at once (threads, each with its own worker process), so that proposing,
compiling and checking overlap with measuring; a lock lets only one worker use the GPU at a time,
so no measurement ever shares the GPU with another.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import kernels, store as st
from .baselines import memory_floor_us
from .compiler import ParallelCompiler, binary_summary
from .problem import FUSED_OPS, Problem
from .strategy import TuneResult, problem_seed, transfer_seeds, tune
from .workers import GpuWorker


@dataclass
class Row:
    """One line of the final table."""
    problem: Problem
    best_us: float | None
    cudnn_us: float | None
    cudnn_conv_us: float | None
    floor_us: float
    measured: int

    @property
    def peer_us(self):
        """The stronger PyTorch peer: with bias/activation, or the bare convolution."""
        peers = [t for t in (self.cudnn_us, self.cudnn_conv_us) if t]
        return min(peers) if peers else None

    @property
    def speedup(self):
        return self.cudnn_us / self.best_us if self.best_us and self.cudnn_us else None

    @property
    def speedup_vs_stronger(self):
        return self.peer_us / self.best_us if self.best_us and self.peer_us else None

    @property
    def floor_fraction(self):
        return self.floor_us / self.best_us if self.best_us else None


class _GpuSession:
    """A worker process per tuning thread, sharing one lock around every use of the GPU."""

    def __init__(self, device_id: int, lock: threading.Lock):
        self.worker = GpuWorker(device_id)
        self.lock = lock
        self._problem = None          # (problem, seed) measured next
        self._loaded = False          # its inputs are in the current worker process

    def gpu(self, *request, **kw):
        with self.lock:
            return self.worker.request(*request, **kw)

    def use(self, problem: Problem, seed: int):
        """Measure `problem` from now on. Its inputs and reference are made at the first measurement -
        none for a study that is already complete - and again in a fresh worker after one was lost."""
        self._problem, self._loaded = (problem, seed), False

    def measure(self, family, config, binary):
        if not (self._loaded and self.worker.alive):
            problem, seed = self._problem
            self.worker.request("prepare", problem.to_dict(), seed, timeout_s=600)   # CPU, unlocked
            self.gpu("upload", seed, timeout_s=120)
            self._loaded = True
        fields = binary_summary(binary) | {"image": binary.image, "log": ""}
        return self.gpu("measure", family.name, config, fields)


def run_sweep(problems, store: st.Store, device_id: int = 0, trials: int = 40, timeout_s: float | None = None,
              seed: int = 0, jobs: int = 3, compile_jobs: int | None = None, baselines: bool = True,
              progress=None, passes: int = 2) -> list[Row]:
    lock = threading.Lock()
    local = threading.local()
    sessions = []

    def session() -> _GpuSession:
        if not hasattr(local, "session"):
            local.session = _GpuSession(device_id, lock)
            sessions.append(local.session)
        return local.session

    first = session()
    gpu_info = first.gpu("describe", timeout_s=300)
    gpu = store.add_gpu(gpu_info)
    arch = gpu_info["arch"]

    # Two passes: every problem first gets half its trials, then the rest, its study seeded with the
    # best configurations that similar problems found in the first pass.
    budgets = [trials // 2, trials] if passes > 1 and trials >= 8 else [trials]
    with ParallelCompiler(compile_jobs) as compiler:
        def work(problem: Problem, budget: int, final: bool) -> TuneResult:
            s = session()
            store.add_problem(problem)
            pseed = problem_seed(problem, seed)
            if baselines and "cudnn" not in store.baselines(gpu, problem.key):
                peers = s.gpu("baseline", problem.to_dict(), timeout_s=600)
                for peer in ("cudnn", "cudnn_conv"):
                    if peer in peers:
                        store.add_baseline(gpu, problem, peer, peers[peer], peers.get("versions", ""))
            families = kernels.families_for(problem, arch)
            if families:
                s.use(problem, pseed % 2**31)
                result = tune(problem, families, gpu, store, s.measure, compiler, arch,
                              trials=budget, timeout_s=timeout_s / len(budgets) if timeout_s else None, seed=seed,
                              seeds=transfer_seeds(store, gpu, problem, families) if final and len(budgets) > 1 else (),
                              progress=(lambda r: progress("trial", r)) if progress else None)
            else:           # a block no family runs whole: only its plans are timed (below)
                result = TuneResult(problem)
            if progress and final:
                progress("done", result)
            return result

        try:
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                for i, budget in enumerate(budgets):
                    final = i == len(budgets) - 1
                    results = list(pool.map(lambda p: work(p, budget, final), problems))
            time_block_plans([p for p in problems if p.op in FUSED_OPS], store, gpu, first, progress)
        finally:
            for s in sessions:
                s.worker.close()
    return [summary_row(store, gpu, r.problem, r.measured) for r in results]


def time_block_plans(blocks, store: st.Store, gpu: str, session: _GpuSession, progress=None):
    """Time each block's plans whole (plan_timing.py) now that their kernels are tuned, and store the
    times of those that pass the reference check in place of the block's earlier ones; lookup then
    runs the fastest. A plan that fails the check is reported and left out; a block whose timing fails
    altogether (no PyTorch, a lost worker) keeps what the database had."""
    for problem in blocks:
        try:
            times = session.gpu("time_plans", problem.to_dict(), str(store.path), timeout_s=600)
        except Exception as exc:          # the worker's error or its loss: report, go on
            times, error = [], f"{type(exc).__name__}: {exc}"
        else:
            error = "; ".join(f"{t['plan']} {t['error']}" for t in times if t["time_us"] is None)
        passed = [t for t in times if t["time_us"] is not None]
        if passed:
            store.set_plan_times(gpu, problem, passed)
        if progress:
            progress("plans", (problem, passed, error))


def summary_row(store: st.Store, gpu: str, problem: Problem, measured: int = 0) -> Row:
    """The problem's time as lookup runs it: a block's fastest plan timed whole where its plans were
    timed (a one-kernel block that loses to three kernels is not the block's time), else its fastest
    kernel."""
    best = store.best(gpu, problem.key)
    plans = store.plan_times(gpu, problem.key) if problem.op in FUSED_OPS else {}
    best_us = min(plans.values()) if plans else best["time_us"] if best else None
    peers = store.baselines(gpu, problem.key)
    # Derived from the GPU's copy bandwidth as it stands (a re-measured bandwidth moves every floor).
    floor = memory_floor_us(problem, store.gpu(gpu)["copy_bandwidth"])
    return Row(problem, best_us, peers.get("cudnn"), peers.get("cudnn_conv"), floor, measured)


def format_table(rows: list[Row]) -> str:
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-"
    head = f"{'problem':56s} {'best us':>8s} {'cuDNN us':>9s} {'conv-only':>9s} {'speedup':>8s} {'vs best peer':>12s} {'floor frac':>10s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.problem.key:56s} {f(r.best_us, '8.2f')} {f(r.cudnn_us, '9.2f')} {f(r.cudnn_conv_us, '9.2f')} "
                     f"{f(r.speedup, '7.2f')}x {f(r.speedup_vs_stronger, '11.2f')}x {f(r.floor_fraction, '10.2f')}")
    return "\n".join(lines)


def elapsed(start: float) -> str:
    s = int(time.monotonic() - start)
    return f"{s // 60}:{s % 60:02d}"
