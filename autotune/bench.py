"""`autotune bench`: our kernels (as lookup and autotune.torch run them) against PyTorch eager,
torch.compile, the memory floor and a bare copy of the same bytes - per layer, per block and for a whole
model - all measured in one run on one GPU, by CUDA-graph replay over rotating inputs.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .baselines import memory_floor_us, torch_block, torch_graph_time, torch_sets
from .kernels import runnable
from .models import model_problems
from .problem import OPS, Problem
from .reference import RTOL, compare


@dataclass
class BenchRow:
    name: str
    ours_us: float
    eager_us: float
    compiled_us: float | None     # None: torch.compile was not asked for, or failed
    floor_us: float | None
    how: str = ""                 # which plan / kernel ran ours
    copy_us: float | None = None  # a kernel moving the same bytes, launched like ours (None: not measured)

    @property
    def speedup(self) -> float:
        return self.eager_us / self.ours_us

    @property
    def speedup_compiled(self) -> float | None:
        return self.compiled_us / self.ours_us if self.compiled_us else None


def bench_problem(problem: Problem, db=None, compile_: bool = False, copy_bandwidth: float | None = None) -> BenchRow:
    import torch
    from .kernels.copy import COPY_FLOOR
    from .lookup import TunedKernel, current_gpu, lookup
    from .plans import BlockKernel
    sets = torch_sets(problem)
    kernel = lookup(problem, db=db)
    copy = TunedKernel(problem, COPY_FLOOR, {}, current_gpu()["arch"], fallback="")
    eager = torch_block(problem)
    with torch.no_grad():
        ours = torch_graph_time(torch, lambda i: kernel(sets[i][0], sets[i][2], sets[i][3]), len(sets))
        copy_us = torch_graph_time(torch, lambda i: copy(sets[i][0], sets[i][2], sets[i][3]), len(sets))
        eager_us = torch_graph_time(torch, lambda i: eager(sets[i][0], sets[i][1], sets[i][3]), len(sets))
        compiled_us = None
        if compile_:
            compiled_us = _compiled_time(torch, eager, lambda i: (sets[i][0], sets[i][1], sets[i][3]), len(sets))
    how = kernel.plan.reason if isinstance(kernel, BlockKernel) else f"{kernel.family.name} ({kernel.fallback})"
    floor = memory_floor_us(problem, copy_bandwidth) if copy_bandwidth else None
    return BenchRow(problem.key, ours, eager_us, compiled_us, floor, how, copy_us)


def _compiled_time(torch, fn, args_of, n_sets: int) -> float | None:
    try:
        # Fresh caches for every layer: layers share their forward's code, and past dynamo's recompile
        # limit (8 shapes of one function) torch.compile silently runs it eagerly.
        torch._dynamo.reset()
        compiled = torch.compile(fn)
        return torch_graph_time(torch, lambda i: compiled(*args_of(i)), n_sets)
    except Exception as exc:      # torch.compile is best effort: report, don't fail the bench
        print(f"autotune bench: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]})")
        return None


def bench_model(model: str, batch: int, dtype: str, layout: str, db=None, compile_: bool = True,
                n_inputs: int = 8) -> tuple[BenchRow, float]:
    """Whole torchvision model (random weights, eval): (times, worst error / fp tolerance of our
    output against PyTorch eager's)."""
    import torch
    import torchvision
    from . import torch as autotune_torch
    dt = getattr(torch, dtype)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    torch.manual_seed(0)
    net = getattr(torchvision.models, model)().eval()
    for m in net.modules():          # non-trivial BatchNorm statistics, so that folding is tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net = net.to("cuda", dt).to(memory_format=fmt)
    fast = autotune_torch.optimize(net, db=db)
    xs = [torch.rand(batch, 3, 224, 224, device="cuda", dtype=dt).contiguous(memory_format=fmt) for _ in range(n_inputs)]
    with torch.no_grad():
        err = _model_error(fast(xs[0]), net(xs[0]), dtype)
        eager_us = torch_graph_time(torch, lambda i: net(xs[i]), n_inputs)
        ours = torch_graph_time(torch, lambda i: fast(xs[i]), n_inputs)
        compiled_us = _compiled_time(torch, net, lambda i: (xs[i],), n_inputs) if compile_ else None
    how = f"{fast.autotune_blocks} blocks on tuned kernels"
    return BenchRow(f"{model} N{batch} {dtype} {layout}", ours, eager_us, compiled_us, None, how), err


def _model_error(out, ref, dtype: str) -> float:
    """Worst |ours - eager| over the tolerance, a fp16 model's many roundings allowed 8x a kernel's."""
    rtol = RTOL[dtype] * (8 if dtype == "float16" else 1)
    return compare(out.float().cpu().numpy(), ref.double().cpu().numpy(), dtype, rtol)[1]


def run_bench(model: str, batch: int, dtype: str, layout: str, ops=("conv", "dw", "pw", "ir"), db=None,
              compile_: bool = True, compile_layers: bool = False, whole_model: bool = True, progress=print) -> dict:
    """compile_: torch.compile the whole model; compile_layers: also every layer and block (slow)."""
    from .device import describe
    gpu = describe()
    bw = gpu["copy_bandwidth"]
    rows = []
    problems, _ = runnable(model_problems(model, ops=tuple(ops), batches=(batch,), dtypes=(dtype,), layouts=(layout,)))
    start = time.monotonic()
    for i, p in enumerate(problems):
        rows.append(bench_problem(p, db=db, compile_=compile_layers, copy_bandwidth=bw))
        progress(f"[{i + 1}/{len(problems)}] {format_row(rows[-1])}  ({time.monotonic() - start:.0f} s)")
    result = {"gpu": gpu["name"], "copy_bandwidth": bw, "model": model, "batch": batch, "dtype": dtype,
              "layout": layout, "rows": [asdict(r) for r in rows]}
    if whole_model:
        row, err = bench_model(model, batch, dtype, layout, db=db, compile_=compile_)
        result["model_row"], result["model_error"] = asdict(row), err
        progress(f"{format_row(row)}  output vs eager: worst error / tolerance {err:.3g}")
    return result


def format_row(r: BenchRow) -> str:
    comp = f"{r.compiled_us:9.1f}" if r.compiled_us else "        -"
    vs_comp = f"{r.speedup_compiled:6.2f}x" if r.speedup_compiled else "      -"
    floor = f"{r.floor_us / r.ours_us:5.2f}" if r.floor_us else "    -"
    copy = f"{r.copy_us / r.ours_us:5.2f}" if r.copy_us else "    -"
    return f"{r.name:62s} {r.ours_us:9.1f} {r.eager_us:9.1f} {comp} {r.speedup:6.2f}x {vs_comp} {floor} {copy}"


HEADER = (f"{'layer / block':62s} {'ours us':>9s} {'eager us':>9s} {'compile':>9s} {'x eager':>7s} {'x comp':>7s} "
          f"{'floor':>5s} {'copy':>5s}")


def format_table(result: dict) -> str:
    rows = [BenchRow(**r) for r in result["rows"]]
    lines = [f"{result['gpu']}, copy bandwidth {result['copy_bandwidth'] / 1e9:.0f} GB/s; "
             f"floor = memory floor / our time; copy = a bare copy of the same bytes, launched like ours / our time",
             HEADER, "-" * len(HEADER)]
    lines += [format_row(r) for r in rows]
    if "model_row" in result:
        lines += ["", format_row(BenchRow(**result["model_row"])),
                  f"  whole-model output vs PyTorch eager: worst error / tolerance {result['model_error']:.3g}"]
    return "\n".join(lines)


def file_stem(result: dict, ops, compile_layers: bool, day: str) -> str:
    """The name of a bench's files: date, GPU, model, batch, dtype, layout; a run of only some ops or
    with every layer compiled says so, so that it does not replace the full bench's files."""
    gpu = result["gpu"].replace("NVIDIA ", "").split()[0].lower()
    stem = f"{day}-{gpu}-bench-{result['model']}-b{result['batch']}-{result['dtype']}-{result['layout']}"
    if set(ops) != set(OPS):
        stem += "-" + "-".join(op for op in OPS if op in ops)
    return stem + ("-compiled-layers" if compile_layers else "")


def save(result: dict, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{stem}.json", out_dir / f"{stem}.txt"]
    written[0].write_text(json.dumps(result, indent=1))
    written[1].write_text(format_table(result) + "\n")
    png = _plot(result, out_dir / f"{stem}.png")
    return written + ([png] if png else [])


def _plot(result: dict, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("autotune bench: matplotlib is not installed (pip install 'autotune[plot]'): no PNG")
        return None
    rows = [BenchRow(**r) for r in result["rows"]]
    if "model_row" in result:
        rows.append(BenchRow(**result["model_row"]))
    names = [r.name.split(" bias")[0].replace(" relu6/none", "").replace(" relu6", "") for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r.speedup for r in rows], height=0.4, label="ours vs PyTorch eager")
    ax.barh([y + 0.2 for y in ys], [r.speedup_compiled or 0 for r in rows], height=0.4, label="ours vs torch.compile")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup (higher is better)")
    ax.set_title(f"autotune on {result['gpu']}: {result['model']} batch {result['batch']} {result['dtype']} "
                 f"{result['layout']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
