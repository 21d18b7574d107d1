"""Command line: `autotune sweep` tunes and stores, `autotune show` lists what a database holds."""
from __future__ import annotations

import argparse
import random
import sys
import time

from . import __version__, kernels
from .models import MODELS, model_problems
from .problem import DTYPES, LAYOUTS, OPS, ProblemError


def _csv(kind, allowed=None):
    def parse(text):
        items = [kind(t.strip()) for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        for item in items:
            if allowed and item not in allowed:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(allowed)}")
        return items
    return parse


def _positive(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


class CommandError(Exception):
    """A clear message for the user; main() prints it after the command's name and exits with `code`."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _open_database(path):
    from .store import Store
    try:
        return Store(path, readonly=True)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autotune", description=__doc__)
    parser.add_argument("--version", action="version", version=f"autotune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sw = sub.add_parser("sweep", help="tune every problem of a model on a GPU and store the results")
    sw.add_argument("--gpu", type=int, default=None, help="CUDA device index to tune on")
    sw.add_argument("--dry-run", action="store_true",
                    help="no GPU: render and compile the candidates for --arch and report failures and resources")
    sw.add_argument("--arch", default="sm_90", help="target arch for --dry-run (default sm_90)")
    sw.add_argument("--model", default="mobilenet_v2", choices=sorted(MODELS))
    sw.add_argument("--ops", type=_csv(str, OPS), default=list(OPS), help=f"any of {','.join(OPS)} (default: all)")
    sw.add_argument("--dtype", type=_csv(str, DTYPES), default=["float16", "float32"])
    sw.add_argument("--layout", type=_csv(str, LAYOUTS), default=["nhwc", "nchw"])
    sw.add_argument("--batch", type=_csv(_positive), default=[1, 16])
    sw.add_argument("--trials", type=_positive, default=40, help="configurations measured per problem")
    sw.add_argument("--timeout", type=float, default=None, help="seconds per problem's study")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--jobs", type=_positive, default=3, help="problems tuned at once (the GPU is still shared one at a time)")
    sw.add_argument("--db", default=None, help="database path (default $AUTOTUNE_DB or tuned_db/autotune.db)")
    sw.add_argument("--no-baselines", action="store_true", help="skip the PyTorch/cuDNN timings")
    sw.add_argument("--tf32", action="store_true",
                    help="also tune float32 1x1 problems that allow TF32 tensor cores (stored as their own problems)")

    sh = sub.add_parser("show", help="list GPUs, problems and best variants in a database")
    sh.add_argument("--db", default=None)
    sh.add_argument("--gpu", default=None, help="only this GPU (name as listed)")

    of = sub.add_parser("onnx-fuse", help="replace an ONNX model's depthwise/pointwise convolutions (with their "
                                          "BatchNormalization and ReLU/ReLU6) by autotune TensorRT plugin nodes")
    of.add_argument("input", help="ONNX model to read")
    of.add_argument("output", help="ONNX model to write")
    of.add_argument("--db", default=None,
                    help="fuse only shapes this tuning database covers (default: fuse every match)")
    of.add_argument("--gpu", default=None, help="with --db: the GPU's name as stored (needed when it holds several)")
    of.add_argument("--blocks", action="store_true",
                    help="also merge depthwise->1x1 chains and inverted residuals into dwpw_conv2d / ir_conv2d "
                         "nodes, which export-trt's plugins implement")

    et = sub.add_parser("export-trt", help="write a TensorRT Python plugin module (tensorrt.plugin, AOT) with the "
                                           "tuned kernels of a GPU, for models rewritten by onnx-fuse")
    et.add_argument("--db", default=None, help="database path (default $AUTOTUNE_DB or tuned_db/autotune.db)")
    et.add_argument("--gpu", required=True, help="the GPU's name (or id) as stored, or 'all'")
    et.add_argument("--out", required=True, help="directory to write autotune_plugins.py into")
    et.add_argument("--no-cpp", action="store_true",
                    help="do not also write OUT/cpp/ (C++ IPluginV3 plugin library source, kernel header, "
                         "CMakeLists.txt for trtexec --dynamicPlugins)")

    be = sub.add_parser("bench", help="our kernels vs PyTorch eager vs torch.compile vs the memory floor, per layer, "
                                      "per block and for the whole model, in one run (table, JSON and PNG)")
    be.add_argument("--gpu", type=int, default=0, help="CUDA device index")
    be.add_argument("--model", default="mobilenet_v2", choices=sorted(MODELS))
    be.add_argument("--ops", type=_csv(str, OPS), default=list(OPS), help=f"any of {','.join(OPS)} (default: all)")
    be.add_argument("--batch", type=_positive, default=16)
    be.add_argument("--dtype", choices=DTYPES, default="float16")
    be.add_argument("--layout", choices=LAYOUTS, default="nhwc")
    be.add_argument("--db", default=None, help="database path (default $AUTOTUNE_DB or tuned_db/autotune.db)")
    be.add_argument("--no-compile", action="store_true", help="skip torch.compile of the whole model")
    be.add_argument("--compile-layers", action="store_true",
                    help="also torch.compile every layer and block (minutes of compiling)")
    be.add_argument("--no-model", action="store_true", help="skip the whole-model figures")
    be.add_argument("--out", default="results", help="directory for the table, JSON and PNG (default results/)")
    return parser


class Progress:
    """One self-rewriting status line on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, unit: str):
        self.total, self.unit, self.done, self.start = total, unit, 0, time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def step(self, n: int = 1, note: str = ""):
        self.done += n
        now = time.monotonic()
        if not self.tty and now - self._last < 10 and self.done < self.total:
            return
        self._last = now
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit} "
                f"{int(now - self.start)}s elapsed, ~{int(eta)}s left {note}")
        sys.stderr.write(("\r" + line[:150].ljust(150)) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self):
        if self.tty:
            sys.stderr.write("\n")


def _runnable(problems) -> list:
    """The problems some kernel family runs; says which it leaves out (PyTorch runs those)."""
    fit, unfit = kernels.runnable(problems)
    if unfit:
        print(f"autotune: no kernel runs {len(unfit)} problem(s), skipped (PyTorch runs them): "
              f"{unfit[0].key}{', ...' if len(unfit) > 1 else ''}", file=sys.stderr)
    return fit


def cmd_sweep(args) -> int:
    problems = model_problems(args.model, ops=args.ops, batches=args.batch, dtypes=args.dtype, layouts=args.layout,
                              tf32=args.tf32)
    problems = _runnable(problems)
    if args.dry_run:
        return dry_run(problems, args)
    if args.gpu is None:
        print("autotune sweep: pass --gpu N to tune on CUDA device N, or --dry-run --arch sm_90 to only "
              "compile the candidates without a GPU", file=sys.stderr)
        return 2
    reason = _gpu_missing(args.gpu)
    if reason:
        print(f"autotune sweep: no usable GPU {args.gpu}: {reason}\n"
              f"Without a GPU, `autotune sweep --dry-run --arch sm_90` renders and compiles every candidate.",
              file=sys.stderr)
        return 2
    from .store import Store
    from .sweep import elapsed, format_table, run_sweep
    store = Store(args.db)
    print(f"autotune: {len(problems)} problems x {args.trials} trials on GPU {args.gpu}, results in {store.path}",
          file=sys.stderr)
    bar = Progress(len(problems) * args.trials, "trials")
    counted = {}

    def progress(event, result):
        if event == "plans":      # after the trials: a block's plans timed whole
            from .plans import format_timed
            problem, times, error = result
            timed = format_timed({t["plan"]: t["time_us"] for t in times})
            print(f"plans of {problem.key}: {timed or 'none timed'}" + (f" ({error})" if error else ""),
                  file=sys.stderr)
            return
        key = result.problem.key
        if event == "trial":
            bar.step(result.measured - counted.get(key, 0), f"| {key[:48]}")
            counted[key] = result.measured
        else:   # a problem finished early (space exhausted, timeout): count its remaining trials
            bar.step(max(0, args.trials - counted.get(key, 0)))
            counted[key] = args.trials

    start = time.monotonic()
    try:
        rows = run_sweep(problems, store, device_id=args.gpu, trials=args.trials, timeout_s=args.timeout,
                         seed=args.seed, jobs=args.jobs, baselines=not args.no_baselines, progress=progress)
    finally:
        bar.close()
        store.close()
    print(format_table(rows))
    print(f"\n{len(rows)} problems tuned in {elapsed(start)} (m:ss); database: {store.path}")
    return 0


def _gpu_missing(device_id: int) -> str | None:
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:        # no driver, no CuPy, ...
        return f"{type(exc).__name__}: {exc}".strip()
    if device_id < 0 or device_id >= count:
        return f"{count} CUDA device(s) visible"
    return None


def dry_run(problems, args) -> int:
    """Render and compile, for --arch, each problem's default configuration and --trials seeded samples
    of its valid space (the candidates a sweep would start from). Needs no GPU."""
    from . import codegen, kernels
    from .compiler import ParallelCompiler, normalize_arch
    from .searchspace import all_configs, valid_configs
    arch = normalize_arch(args.arch)
    sources = {}
    excluded = 0
    for problem in problems:
        rng = random.Random(f"{args.seed}:{problem.key}")
        for family in kernels.families_for(problem, arch):
            valid = valid_configs(family, problem)
            excluded += sum(1 for _ in all_configs(family, problem)) - len(valid)
            picks = [family.default_config(problem)] + rng.sample(valid, min(args.trials, len(valid)))
            for config in picks:
                code = codegen.render(family, problem, config).code
                sources.setdefault(code, (family.name, problem.key, config))
    print(f"dry run for {arch}: {len(problems)} problems, {len(sources)} distinct kernels to compile "
          f"({excluded} configurations excluded by constraints before compiling)", file=sys.stderr)
    bar = Progress(len(sources), "kernels")
    with ParallelCompiler() as compiler:
        results = compiler.compile(list(sources), arch, progress=lambda n: bar.step(n))
    bar.close()
    failures = [(sources[c], r) for c, r in zip(sources, results) if isinstance(r, Exception)]
    ok = [r for r in results if not isinstance(r, Exception)]
    by_family = {}
    for (family, _, _), r in zip(sources.values(), results):
        if not isinstance(r, Exception):
            by_family.setdefault(family, []).append(r)
    print(f"{'family':20s} {'kernels':>8s} {'registers min/median/max':>26s} {'spilling':>9s} {'max smem':>9s}")
    for family, rs in sorted(by_family.items()):
        regs = sorted(r.registers or 0 for r in rs)
        print(f"{family:20s} {len(rs):8d} {regs[0]:>10d}/{regs[len(regs) // 2]}/{regs[-1]:<8d} "
              f"{sum(1 for r in rs if r.spill_bytes):9d} {max(r.shared_bytes or 0 for r in rs):9d}")
    for (family, key, config), err in failures[:10]:
        print(f"\nFAILED {family} {key} {config}:\n{str(err)[:1500]}")
    print(f"\n{len(ok)} compiled, {len(failures)} failed")
    return 1 if failures else 0


def cmd_show(args) -> int:
    from .sweep import format_table, summary_row
    store = _open_database(args.db)
    gpus = [g for g in store.gpus() if args.gpu in (None, g["id"], g["name"])]
    if not gpus:
        print(f"autotune show: no GPU {args.gpu!r} in {store.path}", file=sys.stderr)
        return 2
    for g in gpus:
        print(f"{g['id']}: {g['sm_count']} SMs, copy bandwidth {g['copy_bandwidth'] / 1e9:.0f} GB/s, measured {g['measured_at']}")
        blocks = [r["problem"] for r in store.db.query(
            "select distinct problem from plan_times where gpu = ? order by problem", [g["id"]])] \
            if store.db["plan_times"].exists() else []      # (databases from before plans were timed)
        tuned = [r["problem"] for r in store.db.query("select problem from best where gpu = ?", [g["id"]])]
        rows = [summary_row(store, g["id"], store.problem(key)) for key in sorted(set(tuned) | set(blocks))]
        print(format_table(rows))
        if blocks:
            from .plans import format_timed
            print("blocks' plans timed whole (lookup runs the fastest):")
            for key in blocks:
                print(f"  {key}: {format_timed(store.plan_times(g['id'], key))}")
        counts = dict(store.db.execute("select status, count(*) from trials where gpu = ? group by status",
                                       [g["id"]]).fetchall())
        print("trials: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "\n")
    return 0


def cmd_onnx_fuse(args) -> int:
    from pathlib import Path
    try:
        from .exporters.onnx_fuse import FuseError, fuse_model, require_onnx
        onnx = require_onnx()
    except ImportError as exc:
        print(f"autotune onnx-fuse: {exc}", file=sys.stderr)
        return 2
    if not Path(args.input).is_file():
        print(f"autotune onnx-fuse: no such file: {args.input}", file=sys.stderr)
        return 2
    if args.gpu is not None and args.db is None:
        print("autotune onnx-fuse: --gpu only applies with --db (without a database every match is fused)",
              file=sys.stderr)
        return 2
    try:
        model = onnx.load(args.input)
        onnx.checker.check_model(model)
    except Exception as exc:
        print(f"autotune onnx-fuse: {args.input} is not a valid ONNX model: {str(exc).strip()[:500]}",
              file=sys.stderr)
        return 2
    store = _open_database(args.db) if args.db is not None else None
    try:
        fused, report = fuse_model(model, store=store, gpu=args.gpu, blocks=args.blocks)
    except FuseError as exc:
        print(f"autotune onnx-fuse: {exc}", file=sys.stderr)
        return 2
    onnx.save(fused, args.output)
    print(report.format())
    print(f"written: {args.output}")
    return 0


def cmd_export_trt(args) -> int:
    from .compiler import CompileError
    from .exporters.trt_cpp import export_cpp_plugins
    from .exporters.trt_python import ExportError, export_python_plugins
    store = _open_database(args.db)
    exporters = [(export_python_plugins, "{} (import it, with TensorRT >= 10.8 installed, before building an engine "
                                         "from a model rewritten by `autotune onnx-fuse`)")]
    if not args.no_cpp:
        exporters.append((export_cpp_plugins, "{}/ (C++ plugin library source: cmake -S {} -B build "
                                              "-DTENSORRT_INCLUDE_DIR=<TensorRT include dir>, then "
                                              "trtexec --dynamicPlugins=<the .so>)"))
    for export, written in exporters:
        try:
            path = export(store, args.gpu, args.out)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        except CompileError as exc:
            raise CommandError(f"compiling a kernel failed: {str(exc)[:1500]}", code=1) from None
        print("written: " + written.format(path, path))
    return 0


def cmd_bench(args) -> int:
    reason = _gpu_missing(args.gpu)
    if reason:
        raise CommandError(f"no usable GPU {args.gpu}: {reason} (bench measures on a GPU)")
    try:
        import torch
    except ImportError:
        raise CommandError("bench compares against PyTorch: install torch (and torchvision for --model figures)")
    from pathlib import Path
    from .bench import HEADER, file_stem, format_table, run_bench, save
    import cupy
    cupy.cuda.Device(args.gpu).use()
    torch.cuda.set_device(args.gpu)
    print(HEADER, file=sys.stderr)
    result = run_bench(args.model, args.batch, args.dtype, args.layout, ops=args.ops, db=args.db,
                       compile_=not args.no_compile, compile_layers=args.compile_layers,
                       whole_model=not args.no_model,
                       progress=lambda line: print(line, file=sys.stderr))
    print(format_table(result))
    stem = file_stem(result, args.ops, args.compile_layers, time.strftime('%Y-%m-%d'))
    for path in save(result, Path(args.out), stem):
        print(f"written: {path}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"sweep": cmd_sweep, "show": cmd_show, "onnx-fuse": cmd_onnx_fuse,
                "export-trt": cmd_export_trt, "bench": cmd_bench}[args.command](args)
    except CommandError as exc:
        print(f"autotune {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except ProblemError as exc:
        print(f"autotune: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nautotune: interrupted; finished trials are saved, run the same command to resume", file=sys.stderr)
        return 130
