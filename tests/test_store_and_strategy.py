"""The database round trip, and a sweep's search loop with a stand-in for the GPU: every trial is
recorded, the best is kept, and a second run resumes without measuring anything twice."""
import pytest

from autotune.compiler import ParallelCompiler
from autotune.kernels import depthwise, families_for
from autotune.problem import Problem
from autotune.searchspace import config_key
from autotune.store import INVALID, OK, WRONG, Store
from autotune.strategy import tune
from autotune.workers import WorkerLost

GPU = {"name": "Test GPU", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
       "l2_bytes": 50 << 20, "memory_bytes": 80 << 30, "copy_bandwidth": 3e12}
PROBLEM = Problem("dw", 16, 32, 112, 112, k=3, act="relu6", dtype="float16", layout="nhwc")


def test_round_trip(tmp_path):
    store = Store(tmp_path / "a.db")
    gid = store.add_gpu(GPU)
    store.add_problem(PROBLEM)
    c1 = {"a": 1, "b": True}
    c2 = {"b": False, "a": 2}
    store.add_trial(gid, PROBLEM, "fam", c1, OK, time_us=5.0, registers=40)
    store.add_trial(gid, PROBLEM, "fam", c2, OK, time_us=3.0)
    store.add_trial(gid, PROBLEM, "fam", {"a": 3, "b": True}, WRONG, error="differs")
    store.add_baseline(gid, PROBLEM, "cudnn", 9.0, "torch x")
    reopened = Store(tmp_path / "a.db", create=False)
    assert reopened.problem(PROBLEM.key) == PROBLEM
    best = reopened.best(gid, PROBLEM.key)
    assert best["config"] == c2 and best["time_us"] == 3.0
    assert [t["status"] for t in reopened.trials(gid, PROBLEM.key)] == [OK, OK, WRONG]
    assert reopened.baselines(gid, PROBLEM.key) == {"cudnn": 9.0}
    assert reopened.gpu(gid)["copy_bandwidth"] == 3e12
    # a slower re-measurement of another config does not displace the best
    reopened.add_trial(gid, PROBLEM, "fam", c1, OK, time_us=4.0)
    assert reopened.best(gid, PROBLEM.key)["config"] == c2
    assert config_key(c2) == '{"a":2,"b":false}'


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tuning database"):
        Store(tmp_path / "none.db", create=False)


class FakeGpu:
    """Times a configuration by a formula; some configurations 'fault'."""

    def __init__(self):
        self.calls = []

    def __call__(self, family, config, binary):
        self.calls.append(config_key(config))
        if config["tile_w"] == 32 and config["out_h"] == 4:
            raise WorkerLost("worker process died (exit code -11)")
        return {"status": OK, "time_us": 10.0 + config["tile_h"] + 4.0 / config["vec"], "error": None,
                "max_error": 0.1}


def test_tune_records_everything_and_resumes(tmp_path):
    store = Store(tmp_path / "t.db")
    gid = store.add_gpu(GPU)
    store.add_problem(PROBLEM)
    gpu = FakeGpu()
    fams = [depthwise.NHWC]
    with ParallelCompiler(2) as compiler:
        first = tune(PROBLEM, fams, gid, store, gpu, compiler, "sm_90", trials=12, seed=1)
        assert first.measured == 12 and first.new == 12
        rows = store.trials(gid, PROBLEM.key)
        statuses = {r["status"] for r in rows}
        assert OK in statuses
        assert all(r["error"] for r in rows if r["status"] == INVALID)
        assert len(gpu.calls) == len(set(gpu.calls)) == sum(r["status"] != INVALID for r in rows)
        # the default configuration is tried first, so there is always a safe entry
        first_proposal = min((r for r in rows if r["trial_number"] is not None), key=lambda r: r["trial_number"])
        assert first_proposal["config"] == depthwise.NHWC.default_config(PROBLEM)
        best = store.best(gid, PROBLEM.key)
        assert best["time_us"] == min(r["time_us"] for r in rows if r["status"] == OK)

        calls_before = list(gpu.calls)
        second = tune(PROBLEM, fams, gid, store, gpu, compiler, "sm_90", trials=20, seed=1)
        assert second.measured == 20 and second.new == 8
        new_calls = gpu.calls[len(calls_before):]
        assert not set(new_calls) & set(calls_before), "a finished trial was measured again"
        again = tune(PROBLEM, fams, gid, store, gpu, compiler, "sm_90", trials=20, seed=1)
        assert again.new == 0 and len(gpu.calls) == len(calls_before) + len(new_calls)


def test_resume_skips_trials_outside_todays_space(tmp_path):
    """A family's space can shrink between versions: trials of values it no longer offers stay in the
    store but are neither told to TPE (it would refuse them) nor counted."""
    store = Store(tmp_path / "t.db")
    gid = store.add_gpu(GPU)
    store.add_problem(PROBLEM)
    old = {**depthwise.NHWC.default_config(PROBLEM), "tile_w": 999}
    store.add_trial(gid, PROBLEM, depthwise.NHWC.name, old, OK, time_us=1.0)
    with ParallelCompiler(2) as compiler:
        result = tune(PROBLEM, [depthwise.NHWC], gid, store, FakeGpu(), compiler, "sm_90", trials=4, seed=1)
    assert result.measured == 4 and result.new == 4
    assert any(t["config"] == old for t in store.trials(gid, PROBLEM.key))


def test_closed_database_is_one_file_and_opens_read_only(tmp_path):
    path = tmp_path / "ship.db"
    store = Store(path)
    gid = store.add_gpu(GPU)
    store.add_problem(PROBLEM)
    store.add_trial(gid, PROBLEM, "fam", {"a": 1}, OK, time_us=2.0)
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ship.db"]      # no -wal / -shm left
    path.chmod(0o444)
    shipped = Store(path, readonly=True)
    assert shipped.best(gid, PROBLEM.key)["time_us"] == 2.0
    with pytest.raises(Exception, match="readonly"):
        shipped.add_baseline(gid, PROBLEM, "cudnn", 1.0)


def test_seeds_from_similar_problems_are_measured_first(tmp_path):
    """transfer_seeds offers the best configurations of the nearest problems of the same kind (valid
    here, nearest sizes first); tune measures them right after the default configuration."""
    from autotune.strategy import transfer_seeds
    store = Store(tmp_path / "s.db")
    gid = store.add_gpu(GPU)
    near, far = PROBLEM.replace(N=8), PROBLEM.replace(N=1, H=28, W=28)
    other_kind = PROBLEM.replace(stride=2)
    good = {"vec": 8, "ch_per_block": 32, "tile_h": 4, "tile_w": 8, "out_h": 2, "out_w": 1,
            "adjacent_cols": False, "stage_input": True, "unroll_rows": True}
    for problem, config in ((near, good), (far, dict(good, tile_h=2)), (other_kind, dict(good, tile_h=8))):
        store.add_problem(problem)
        store.add_trial(gid, problem, depthwise.NHWC.name, config, OK, time_us=1.0)
    seeds = transfer_seeds(store, gid, PROBLEM, [depthwise.NHWC])
    assert [c for _, c in seeds] == [good, dict(good, tile_h=2)]
    store.add_problem(PROBLEM)
    gpu = FakeGpu()
    with ParallelCompiler(2) as compiler:
        tune(PROBLEM, [depthwise.NHWC], gid, store, gpu, compiler, "sm_90", trials=6, seed=3, seeds=seeds)
    assert gpu.calls[:3] == [config_key(c) for c in
                             (depthwise.NHWC.default_config(PROBLEM), good, dict(good, tile_h=2))]


def test_two_pass_sweep_with_a_stand_in_gpu(tmp_path, monkeypatch):
    """run_sweep end to end without a GPU: both passes run, every problem gets its trials, and the
    second pass measures the other problem's best configuration (a transfer seed)."""
    import types
    from autotune import sweep

    fake = FakeGpu()

    class StandIn:
        def __init__(self, device_id, lock):
            self.worker = types.SimpleNamespace(close=lambda: None)

        def gpu(self, kind, *args, **kw):
            return dict(GPU) if kind == "describe" else {"cudnn": 50.0, "cudnn_conv": 40.0, "versions": "stand-in"}

        def use(self, problem, seed):
            pass

        def measure(self, family, config, binary):
            if family.name != depthwise.NHWC.name:        # the tensor-core family: slower, by fiat
                return {"status": OK, "time_us": 30.0 + sum(config.values()) % 7, "error": None, "max_error": 0.1}
            return fake(family, config, binary)

    monkeypatch.setattr(sweep, "_GpuSession", StandIn)
    store = Store(tmp_path / "w.db")
    problems = [PROBLEM, PROBLEM.replace(N=8)]
    rows = sweep.run_sweep(problems, store, trials=16, jobs=1, compile_jobs=2)
    gid = store.gpus()[0]["id"]
    assert [r.measured for r in rows] == [16, 16] and all(r.best_us for r in rows)
    assert rows[0].cudnn_us == 50.0 and rows[0].peer_us == 40.0
    best_first = store.best(gid, problems[0].key)["config"]
    defaults = [f.default_config(problems[1]) for f in families_for(problems[1])]
    measured = [t["config"] for t in store.trials(gid, problems[1].key) if t["status"] == OK]
    assert measured[:len(defaults)] == defaults      # pass 1 starts with every family's default
    assert best_first in measured                    # the seed: found by pass 1 too, or first in pass 2
    assert best_first in measured[:8] or measured[8] == best_first


def test_session_prepares_lazily_and_again_after_a_lost_worker():
    """The sweep's GPU session makes a problem's inputs at its first measurement only, and again when
    the worker process was lost (a fresh worker holds no inputs)."""
    import threading
    from autotune import sweep

    class Worker:
        def __init__(self):
            self.alive, self.requests = True, []

        def request(self, *message, **kw):
            self.requests.append(message[0])
            self.alive = True           # a request starts a fresh worker when the last one was lost
            return {"status": OK, "time_us": 1.0}

    session = sweep._GpuSession.__new__(sweep._GpuSession)
    session.worker, session.lock = Worker(), threading.Lock()
    session.use(PROBLEM, 7)
    assert session.worker.requests == []                         # nothing measured, nothing made
    from autotune.compiler import Binary
    binary = Binary(arch="sm_90", image=b"", registers=1, spill_bytes=0, shared_bytes=0, log="")
    fam = depthwise.NHWC
    config = fam.default_config(PROBLEM)
    session.measure(fam, config, binary)
    session.measure(fam, config, binary)
    assert session.worker.requests == ["prepare", "upload", "measure", "measure"]
    session.worker.alive = False                                 # the worker died in the last request
    session.measure(fam, config, binary)
    assert session.worker.requests[4:] == ["prepare", "upload", "measure"]


def test_plan_pass_stores_the_plans_that_pass(tmp_path):
    """After the trials a sweep times each block's plans in the worker: it stores those that passed
    the reference, reports the others, and a lost worker costs the block its timings only."""
    from autotune import sweep
    block = Problem("ir", 16, 24, 56, 56, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
    other = block.replace(N=1)
    store = Store(tmp_path / "p.db")
    gid = store.add_gpu(GPU)
    for p in (block, other):
        store.add_problem(p)

    class Session:
        def gpu(self, kind, problem_dict, db, **kw):
            assert kind == "time_plans" and db == str(store.path)
            if problem_dict["N"] == 1:
                raise WorkerLost("worker process died (exit code -11)")
            return [{"plan": "pwdw,pw", "time_us": 20.0, "max_error": 0.2, "kernels": "k", "error": None},
                    {"plan": "ir", "time_us": None, "max_error": 3.0, "kernels": "k", "error": "fails the reference"}]

    events = []
    sweep.time_block_plans([block, other], store, gid, Session(), lambda e, r: events.append((e, r)))
    assert store.plan_times(gid, block.key) == {"pwdw,pw": 20.0} and store.plan_times(gid, other.key) == {}
    assert [e for e, _ in events] == ["plans", "plans"]
    assert "ir fails the reference" in events[0][1][2] and "WorkerLost" in events[1][1][2]
