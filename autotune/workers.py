"""Isolated GPU worker: one child process owns the CUDA context and measures candidates.

A kernel that faults (illegal address) poisons its CUDA context, and one that hangs never returns;
either way only the worker is lost. The parent records the trial as failed with the reason and
starts a fresh worker for the next candidate.
"""
from __future__ import annotations

import multiprocessing as mp
import traceback

from .problem import Problem

DEFAULT_TIMEOUT_S = 30.0       # per request; a kernel taking longer is considered hung
STARTUP_TIMEOUT_S = 120.0      # CUDA context creation and the bandwidth probe


class WorkerLost(RuntimeError):
    """The worker died or timed out; `reason` says which."""


def _serve(conn, device_id: int):
    import os
    os.environ.setdefault("CUPY_CACHE_SAVE_CUDA_SOURCE", "0")
    import cupy as cp
    cp.cuda.Device(device_id).use()
    from . import kernels, runner
    from .compiler import Binary
    data = host = None
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        kind = request[0]
        try:
            if kind == "describe":
                from .device import describe
                reply = describe(device_id)
            elif kind == "prepare":            # CPU only: inputs and the float64 reference
                _, problem_dict, seed = request
                data = None                       # free the previous problem's buffers first
                host = runner.HostData.create(Problem.from_dict(problem_dict), seed)
                reply = {"sets": host.n_sets}
            elif kind == "upload":             # GPU: the rotating buffer sets
                data = runner.ProblemData.upload(host, seed=request[1])
                reply = {}
            elif kind == "measure":
                _, family_name, config, binary_fields = request
                reply = runner.measure(Binary(**binary_fields), kernels.family_named(family_name), config, data)
            elif kind == "baseline":
                from .baselines import torch_times
                _, problem_dict = request
                data = None
                reply = torch_times(Problem.from_dict(problem_dict))
            elif kind == "time_plans":          # a block's plans, whole (plan_timing.py)
                from .plan_timing import time_plans
                _, problem_dict, db = request
                data = None
                reply = time_plans(Problem.from_dict(problem_dict), db, device_id)
            elif kind == "exit":
                return
            else:
                reply = {"status": "error", "error": f"unknown request {kind!r}"}
            conn.send(("ok", reply))
        except Exception as exc:   # report, then let the parent decide whether we are still usable
            cuda_broken = type(exc).__name__ in ("CUDARuntimeError", "CUDADriverError")
            conn.send(("error", {"error": f"{type(exc).__name__}: {exc}", "fatal": cuda_broken,
                                 "traceback": traceback.format_exc(limit=4)}))
            if cuda_broken:
                return


class GpuWorker:
    """Parent-side handle: send a request, get a reply, survive the worker's death."""

    def __init__(self, device_id: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.device_id = device_id
        self.timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")     # never fork a process that may hold CUDA state
        self._proc = None
        self._conn = None
        self.restarts = 0         # fresh workers started after a lost one
        self._started = False

    def _start(self):
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self.device_id), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    @property
    def alive(self) -> bool:
        """A worker process is running (a lost one is replaced only by the next request)."""
        return self._proc is not None and self._proc.is_alive()

    def request(self, *message, timeout_s: float | None = None):
        """Returns the reply; raises WorkerLost if the worker crashed, hung, or broke its context."""
        if self._proc is None or not self._proc.is_alive():
            if self._started:
                self.restarts += 1
            self._started = True
            self._start()
            timeout_s = max(timeout_s or self.timeout_s, STARTUP_TIMEOUT_S)
        try:
            self._conn.send(message)
            if not self._conn.poll(timeout_s or self.timeout_s):
                self._kill()
                raise WorkerLost(f"timed out after {timeout_s or self.timeout_s:.0f} s (kernel hung?)")
            status, reply = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self._proc.exitcode if self._proc else None
            self._kill()
            raise WorkerLost(f"worker process died (exit code {code})") from None
        if status == "error":
            if reply.get("fatal"):
                self._kill()
                raise WorkerLost(reply["error"])
            raise RuntimeError(reply["error"] + "\n" + reply.get("traceback", ""))
        return reply

    def close(self):
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(("exit",))
                self._proc.join(5)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
