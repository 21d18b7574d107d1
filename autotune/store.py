"""Results store: one SQLite file (sqlite-utils), browsable with `sqlite-utils` or Datasette.

Tables
  gpus       one row per GPU model: name, compute capability, SMs, L2, measured copy bandwidth
  problems   one row per problem key, its fields, minimum bytes and flops
  trials     every configuration tried: family, config, status, time, error, resources
  best       the fastest verified trial per (gpu, problem)
  baselines  peer times per (gpu, problem, peer): cudnn, cudnn_conv (the memory floor is derived from
             the GPU's copy bandwidth, not stored)
Every write is one transaction: a crash loses at most the trial in flight.
"""
from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import sqlite_utils

from .problem import Problem
from .searchspace import config_key

DEFAULT_DB = Path("tuned_db") / "autotune.db"
DB_ENV = "AUTOTUNE_DB"

# Trial states. Only "ok" trials are verified and timed.
OK, WRONG, FAILED, INVALID, COMPILE_ERROR = "ok", "wrong", "failed", "invalid", "compile_error"


def default_db_path() -> Path:
    """$AUTOTUNE_DB, else tuned_db/autotune.db of the source checkout (the shipped results), else of
    the working directory."""
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV])
    shipped = Path(__file__).resolve().parent.parent / DEFAULT_DB
    return shipped if shipped.exists() else DEFAULT_DB


def _locked(method):
    """Sweeps tune several problems from threads: one connection, one writer at a time."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def gpu_id(gpu: dict) -> str:
    return f"{gpu['name']} (sm_{gpu['compute_capability'].replace('.', '')})"


class Store:
    def __init__(self, path: str | os.PathLike | None = None, create: bool = True, readonly: bool = False):
        """create=False: the file must exist. readonly=True (lookup at inference): never written, so
        a database shipped inside a read-only installation works."""
        self.path = Path(path) if path else default_db_path()
        if (readonly or not create) and not self.path.exists():
            raise FileNotFoundError(f"no tuning database at {self.path} (run `autotune sweep` first, or pass --db)")
        self._lock = threading.RLock()
        if readonly:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(sqlite3.connect(str(self.path), check_same_thread=False))
        self.db.execute("PRAGMA journal_mode=WAL")     # readers (show, Datasette) while a sweep writes
        self._create_tables()

    @_locked
    def close(self):
        """Fold the write-ahead log back into the file: one self-contained file to ship or commit."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.conn.close()

    def _create_tables(self):
        t = self.db.table
        if not t("gpus").exists():
            t("gpus").create({"id": str, "name": str, "compute_capability": str, "arch": str,
                              "sm_count": int, "l2_bytes": int, "memory_bytes": int,
                              "copy_bandwidth": float, "measured_at": str}, pk="id")
        if not t("problems").exists():
            t("problems").create({"key": str, "op": str, "N": int, "C": int, "H": int, "W": int,
                                  "C_out": int, "k": int, "stride": int, "padding": int, "bias": int,
                                  "act": str, "dtype": str, "layout": str, "act2": str, "expansion": int,
                                  "tf32": int, "min_bytes": int, "flops": int}, pk="key")
        for column, kind, default in (("act2", str, "none"), ("expansion", int, 1),   # databases from before fused blocks
                                      ("tf32", int, 0)):                              # ... and before the TF32 option
            if column not in t("problems").columns_dict:
                t("problems").add_column(column, kind, not_null_default=default)
        if not t("trials").exists():
            t("trials").create({"id": int, "gpu": str, "problem": str, "family": str, "config": str,
                                "status": str, "time_us": float, "error": str, "max_error": float,
                                "registers": int, "spill_bytes": int, "trial_number": int,
                                "created_at": str}, pk="id",
                               foreign_keys=[("gpu", "gpus", "id"), ("problem", "problems", "key")])
            t("trials").create_index(["gpu", "problem", "family", "config"], unique=True)
        if not t("best").exists():
            t("best").create({"gpu": str, "problem": str, "family": str, "config": str,
                              "time_us": float, "trial_id": int, "updated_at": str},
                             pk=("gpu", "problem"),
                             foreign_keys=[("gpu", "gpus", "id"), ("problem", "problems", "key"),
                                           ("trial_id", "trials", "id")])
        if not t("baselines").exists():
            t("baselines").create({"gpu": str, "problem": str, "peer": str, "time_us": float,
                                   "detail": str, "measured_at": str}, pk=("gpu", "problem", "peer"))
        if not t("plan_times").exists():    # a block's plans timed whole, as lookup runs them (plans.py)
            t("plan_times").create({"gpu": str, "problem": str, "plan": str, "time_us": float,
                                    "max_error": float, "kernels": str, "measured_at": str},
                                   pk=("gpu", "problem", "plan"))

    # ---- writes ---------------------------------------------------------------------------------
    @_locked
    def add_gpu(self, gpu: dict) -> str:
        gid = gpu_id(gpu)
        fields = {k: gpu[k] for k in ("name", "compute_capability", "arch", "sm_count", "l2_bytes",
                                      "memory_bytes", "copy_bandwidth") if k in gpu}
        with self.db.conn:
            self.db["gpus"].upsert({"id": gid, **fields, "measured_at": _now()}, pk="id")
        return gid

    @_locked
    def add_problem(self, problem: Problem) -> str:
        row = problem.to_dict()
        row.update(key=problem.key, bias=int(problem.bias), tf32=int(problem.tf32), min_bytes=problem.min_bytes(),
                   flops=problem.flops())
        with self.db.conn:
            self.db["problems"].upsert(row, pk="key")
        return problem.key

    @_locked
    def add_trial(self, gpu: str, problem: Problem, family: str, config: dict, status: str,
                  time_us: float | None = None, error: str | None = None, max_error: float | None = None,
                  registers: int | None = None, spill_bytes: int | None = None,
                  trial_number: int | None = None) -> int:
        """Record a trial and, when it is the fastest verified one, make it the best - atomically."""
        row = {"gpu": gpu, "problem": problem.key, "family": family, "config": config_key(config),
               "status": status, "time_us": time_us, "error": error, "max_error": _finite(max_error),
               "registers": registers, "spill_bytes": spill_bytes, "trial_number": trial_number,
               "created_at": _now()}
        with self.db.conn:
            trials = self.db["trials"]
            existing = self.find_trial(gpu, problem, family, config)
            if existing:
                trial_id = existing["id"]
                trials.update(trial_id, row)
            else:
                trial_id = trials.insert(row).last_pk
            if status == OK and time_us is not None:
                best = self.best(gpu, problem.key)
                if best is None or time_us < best["time_us"]:
                    self.db["best"].upsert({"gpu": gpu, "problem": problem.key, "family": family,
                                            "config": row["config"], "time_us": time_us,
                                            "trial_id": trial_id, "updated_at": _now()},
                                           pk=("gpu", "problem"))
        return trial_id

    @_locked
    def add_baseline(self, gpu: str, problem: Problem, peer: str, time_us: float, detail: str = ""):
        with self.db.conn:
            self.db["baselines"].upsert({"gpu": gpu, "problem": problem.key, "peer": peer,
                                         "time_us": time_us, "detail": detail, "measured_at": _now()},
                                        pk=("gpu", "problem", "peer"))

    @_locked
    def set_plan_times(self, gpu: str, problem: Problem, times: list[dict]):
        """Replace the block's timed plans on this GPU with `times` ({plan, time_us, max_error, kernels}):
        timings of kernels that have since been re-tuned must not outlive them."""
        with self.db.conn:
            self.db["plan_times"].delete_where("gpu = ? and problem = ?", [gpu, problem.key])
            self.db["plan_times"].insert_all(
                [{"gpu": gpu, "problem": problem.key, "plan": t["plan"], "time_us": t["time_us"],
                  "max_error": _finite(t.get("max_error")), "kernels": t.get("kernels", ""),
                  "measured_at": _now()} for t in times], pk=("gpu", "problem", "plan"))

    # ---- reads ----------------------------------------------------------------------------------
    @_locked
    def find_trial(self, gpu: str, problem: Problem, family: str, config: dict) -> dict | None:
        rows = list(self.db["trials"].rows_where("gpu = ? and problem = ? and family = ? and config = ?",
                                                 [gpu, problem.key, family, config_key(config)], limit=1))
        return rows[0] if rows else None

    @_locked
    def trials(self, gpu: str, problem_key: str) -> list[dict]:
        rows = self.db["trials"].rows_where("gpu = ? and problem = ?", [gpu, problem_key], order_by="id")
        return [dict(r, config=json.loads(r["config"])) for r in rows]

    @_locked
    def best(self, gpu: str, problem_key: str) -> dict | None:
        rows = list(self.db["best"].rows_where("gpu = ? and problem = ?", [gpu, problem_key], limit=1))
        return dict(rows[0], config=json.loads(rows[0]["config"])) if rows else None

    @_locked
    def best_rows(self, gpu: str | None = None) -> list[dict]:
        """Best variants joined with their problems, for lookup's fallbacks and reports."""
        where, args = ("where b.gpu = ?", [gpu]) if gpu else ("", [])
        block_fields = "".join(f", p.{c}" for c in ("act2", "expansion") if c in self.db["problems"].columns_dict)
        sql = f"""select b.*, p.op, p.N, p.C, p.H, p.W, p.C_out, p.k, p.stride, p.padding, p.bias,
                         p.act, p.dtype, p.layout{block_fields}, g.compute_capability
                  from best b join problems p on p.key = b.problem join gpus g on g.id = b.gpu {where}"""
        return [dict(r, config=json.loads(r["config"])) for r in self.db.query(sql, args)]

    @_locked
    def baselines(self, gpu: str, problem_key: str) -> dict:
        rows = self.db["baselines"].rows_where("gpu = ? and problem = ?", [gpu, problem_key])
        return {r["peer"]: r["time_us"] for r in rows}

    @_locked
    def plan_times(self, gpu: str, problem_key: str) -> dict:
        """{plan name: µs} of the block's plans timed whole on this GPU (none in older databases)."""
        if not self.db["plan_times"].exists():
            return {}
        rows = self.db["plan_times"].rows_where("gpu = ? and problem = ?", [gpu, problem_key])
        return {r["plan"]: r["time_us"] for r in rows}

    @_locked
    def gpus(self) -> list[dict]:
        return list(self.db["gpus"].rows)

    @_locked
    def gpu(self, gid: str) -> dict | None:
        rows = list(self.db["gpus"].rows_where("id = ?", [gid], limit=1))
        return rows[0] if rows else None

    @_locked
    def problem(self, key: str) -> Problem:
        row = self.db["problems"].get(key)
        fields = {k: row[k] for k in ("op", "N", "C", "H", "W", "C_out", "k", "stride", "padding",
                                      "act", "dtype", "layout")}
        fields.update({k: row[k] for k in ("act2", "expansion") if row.get(k) is not None})
        return Problem(**fields, bias=bool(row["bias"]), tf32=bool(row.get("tf32") or 0))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def _finite(v):
    return v if v is None or v == v and abs(v) != float("inf") else None
