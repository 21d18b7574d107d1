"""`autotune bench`'s report without a GPU: the table, the JSON and (with matplotlib) the PNG written from
a result, and the CLI's clear error without a GPU."""
import importlib.util
import json

from autotune import cli
from autotune.bench import BenchRow, file_stem, format_table, save
from autotune.problem import OPS

RESULT = {
    "gpu": "Test GPU", "copy_bandwidth": 2.5e12, "model": "mobilenet_v2", "batch": 16, "dtype": "float16",
    "layout": "nhwc",
    "rows": [
        dict(name="dw k3 s1 p1 N16 C32 112x112 relu6 bias float16 nhwc", ours_us=16.0, eager_us=40.0,
             compiled_us=None, floor_us=10.0, how="depthwise_nhwc (exact)"),
        dict(name="ir t6 k3 s1 p1 N16 C24->24 56x56 relu6/none bias float16 nhwc", ours_us=45.0, eager_us=90.0,
             compiled_us=60.0, floor_us=2.0, how="depth 1: 47.1 us", copy_us=9.0),
    ],
    "model_row": dict(name="mobilenet_v2 N16 float16 nhwc", ours_us=440.0, eager_us=1056.0, compiled_us=594.0,
                      floor_us=None, how="17 blocks on tuned kernels"),
    "model_error": 0.02,
}


def test_rows_compute_their_ratios():
    r = BenchRow(**RESULT["rows"][1])
    assert r.speedup == 2.0 and r.speedup_compiled == 60.0 / 45.0
    assert BenchRow(**RESULT["rows"][0]).speedup_compiled is None


def test_table_lists_every_row_and_the_model():
    table = format_table(RESULT)
    lines = table.splitlines()
    assert lines[0].startswith("Test GPU, copy bandwidth 2500 GB/s")
    assert lines[1].split()[-2:] == ["floor", "copy"]
    row = next(line for line in lines if line.startswith("dw k3"))
    assert "16.0" in row and "40.0" in row and "2.50x" in row and "0.62" in row    # floor 10 / ours 16
    ir = next(line for line in lines if line.startswith("ir t6"))
    assert "1.33x" in ir and "0.04" in ir and ir.endswith("0.20")      # copy 9 / ours 45
    assert row.endswith("    -")                                       # no copy time measured
    model = next(line for line in lines if line.startswith("mobilenet_v2"))
    assert "2.40x" in model and "1.35x" in model
    assert "worst error / tolerance 0.02" in table


def test_file_names_tell_a_partial_or_compiled_run_from_the_full_bench():
    """A run of some ops, or with every layer compiled, must not overwrite the full bench's files."""
    full = file_stem(RESULT, OPS, False, "2026-11-23")
    assert full == "2026-11-23-test-bench-mobilenet_v2-b16-float16-nhwc"
    assert file_stem(RESULT, ["ir", "dwpw"], False, "2026-11-23") == full + "-dwpw-ir"
    assert file_stem(RESULT, ["ir", "dwpw"], True, "2026-11-23") == full + "-dwpw-ir-compiled-layers"
    assert file_stem(RESULT, list(reversed(OPS)), True, "2026-11-23") == full + "-compiled-layers"


def test_every_layer_is_compiled_from_fresh_dynamo_caches(monkeypatch):
    """Layers share their forward's code: past dynamo's recompile limit torch.compile silently runs
    eagerly, so each layer's compile starts from reset caches (a fake torch records the order)."""
    from types import SimpleNamespace
    from autotune import bench
    calls = []
    fake = SimpleNamespace(_dynamo=SimpleNamespace(reset=lambda: calls.append("reset")),
                           compile=lambda fn: calls.append("compile") or fn)
    monkeypatch.setattr(bench, "torch_graph_time", lambda torch, launch, n: [launch(i) for i in range(n)] and 7.0)
    for _ in range(3):
        assert bench._compiled_time(fake, lambda x: calls.append(x), lambda i: (i,), 2) == 7.0
    assert calls == ["reset", "compile", 0, 1] * 3


def test_save_writes_json_text_and_png_when_it_can(tmp_path):
    written = save(RESULT, tmp_path / "out", "bench")
    names = {p.name for p in written}
    assert {"bench.json", "bench.txt"} <= names
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == RESULT
    assert (tmp_path / "out" / "bench.txt").read_text() == format_table(RESULT) + "\n"
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert ("bench.png" in names) == has_matplotlib
    if has_matplotlib:
        assert (tmp_path / "out" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_a_gpu_says_so(capsys):
    import pytest
    from conftest import gpu_available
    if gpu_available():
        pytest.skip("a GPU is present")
    assert cli.main(["bench"]) == 2
    assert "no usable GPU 0" in capsys.readouterr().err
