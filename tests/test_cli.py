"""The command line without a GPU: clear errors, dry-run compilation, and `show`."""
import pytest

from autotune import cli
from autotune.problem import Problem
from autotune.store import OK, Store


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_without_gpu_points_to_dry_run(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_gpu_missing", lambda device: "no CUDA driver")
    code, _, err = run(capsys, "sweep", "--gpu", "0")
    assert code == 2 and "--dry-run" in err and "no CUDA driver" in err


def test_sweep_needs_gpu_or_dry_run(capsys):
    code, _, err = run(capsys, "sweep")
    assert code == 2 and "--gpu" in err and "--dry-run" in err


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--dtype", "float64"], "float64"),
    (["sweep", "--layout", "nchwc"], "nchwc"),
    (["sweep", "--ops", "dw,conv3d"], "conv3d"),
    (["sweep", "--batch", "0"], "positive"),
    (["sweep", "--trials", "-3"], "positive"),
    (["sweep", "--model", "resnet"], "resnet"),
])
def test_bad_arguments_name_the_problem(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_dry_run_compiles_candidates(capsys):
    code, out, err = run(capsys, "sweep", "--dry-run", "--arch", "sm_80", "--ops", "dw", "--batch", "1",
                         "--dtype", "float16", "--layout", "nhwc,nchw", "--trials", "2")
    assert code == 0, out
    assert "0 failed" in out and "depthwise_nhwc" in out and "depthwise_nchw" in out
    assert "excluded by constraints" in err


def test_show_lists_best_variants(capsys, tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    gid = store.add_gpu({"name": "Test GPU", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
                         "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 3e12})
    p = Problem("dw", 16, 32, 112, 112, k=3, act="relu6", dtype="float16", layout="nhwc")
    store.add_problem(p)
    store.add_trial(gid, p, "depthwise_nhwc", {"x": 1}, OK, time_us=10.0)
    store.add_baseline(gid, p, "cudnn", 20.0)
    code, out, _ = run(capsys, "show", "--db", str(db))
    assert code == 0
    assert p.key in out and "2.00x" in out and "Test GPU" in out and "plans timed whole" not in out
    block = Problem("ir", 16, 24, 56, 56, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
    store.add_problem(block)
    store.set_plan_times(gid, block, [{"plan": "pw,dw,pw", "time_us": 33.2}, {"plan": "pwdw,pw", "time_us": 31.0}])
    code, out, _ = run(capsys, "show", "--db", str(db))
    assert code == 0 and f"  {block.key}: pwdw,pw 31.0 us, pw,dw,pw 33.2 us" in out


def test_show_gives_a_block_its_fastest_plan(capsys, tmp_path):
    """A block's row is the time lookup runs it in: its fastest plan timed whole, not its fastest
    one-kernel trial; a block with plans but no such trial is listed too."""
    db = tmp_path / "s.db"
    store = Store(db)
    gid = store.add_gpu({"name": "Test GPU", "compute_capability": "9.0", "arch": "sm_90", "sm_count": 132,
                         "l2_bytes": 1, "memory_bytes": 1, "copy_bandwidth": 3e12})
    block = Problem("ir", 16, 24, 56, 56, C_out=24, k=3, expansion=6, act="relu6", dtype="float32", layout="nhwc")
    wide = Problem("ir", 16, 160, 7, 7, C_out=320, k=3, expansion=6, act="relu6", dtype="float32", layout="nhwc")
    for p in (block, wide):
        store.add_problem(p)
        store.add_baseline(gid, p, "cudnn", 100.0)
    store.add_trial(gid, block, "fused_block", {"x": 1}, OK, time_us=80.0)
    store.set_plan_times(gid, block, [{"plan": "ir", "time_us": 80.0}, {"plan": "pw,dw,pw", "time_us": 25.0}])
    store.set_plan_times(gid, wide, [{"plan": "pw,dw,pw", "time_us": 40.0}])
    code, out, _ = run(capsys, "show", "--db", str(db))
    rows = {size: line for line in out.splitlines() if line.startswith("ir ") for size in ("56x56", "7x7")
            if f" {size} " in line}
    assert code == 0 and len(rows) == 2
    assert "   25.00" in rows["56x56"] and "4.00x" in rows["56x56"]
    assert "   40.00" in rows["7x7"] and "2.50x" in rows["7x7"]


def test_show_missing_database(capsys, tmp_path):
    code, _, err = run(capsys, "show", "--db", str(tmp_path / "missing.db"))
    assert code == 2 and "no tuning database" in err
