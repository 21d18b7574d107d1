"""Export tuned kernels as a TensorRT Python plugin module (`tensorrt.plugin`, AOT implementations).

    from autotune.store import Store
    from autotune.exporters.trt_python import export_python_plugins
    path = export_python_plugins(Store("tuned_db/autotune.db", readonly=True), "NVIDIA H200", "out/")

writes out/autotune_plugins.py (template: templates/trt_plugins.py.j2). Importing that module (with
TensorRT >= 10 and its `tensorrt.plugin` AOT API) registers "autotune::dw_conv2d",
"autotune::pw_conv2d", "autotune::dwpw_conv2d" and "autotune::ir_conv2d", the ops `onnx_fuse` emits. Their AOT implementation hands TensorRT:
  - the PTX of a tuned kernel (compiled here for compute_XX of the GPU, embedded in the module), its
    parameter list reordered to TensorRT's AOT convention (input pointers, int32 extra arguments,
    output pointers; see `trt_param_order`);
  - grid/block/shared memory as expressions of the input's shape expressions: the family's launch()
    evaluated on `SymInt` sizes and rendered as Python code (only + - * //, which TensorRT's symbolic
    shape expressions support);
  - the int32 extra arguments N, C, H, W, C_out, H_out, W_out, ldx, ldy (kernel-signature order).
Weights and bias are plugin inputs (a block's flat, its stages concatenated); the compile-time
attributes (kernel, stride, padding, act, and for blocks act2, C_out, expansion) select the variant.
A block's kernel, and a streaming pointwise one, is compiled for its channel counts, so its variants
serve only those (N, H and W may vary). Formats: LINEAR (NCHW kernels), HWC (fp32 NHWC kernels), HWC8 (fp16 NHWC kernels, channel
strides padded to a multiple of 8). Each tuned problem offers up to 3 variants as tactics: the best,
then the next fastest verified trials.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import kernels
from ..problem import Problem
from ..store import OK, Store

MAX_TACTICS = 3
# The ops the plugins implement. Dense convs (a stem) stay TensorRT's; TF32 problems are not exported
# either: TensorRT decides on TF32 itself (BuilderFlag.TF32), and a float32 plugin stays exact.
PLUGIN_OPS = ("dw", "pw", "dwpw", "ir")
MODULE_NAME = "autotune_plugins.py"
TEMPLATE = "trt_plugins.py.j2"
SIZE_NAMES = ("N", "C", "H", "W", "C_out")
VECTOR_PARAMS = ("vec", "vec_x", "vec_y")


class ExportError(ValueError):
    """Bad arguments (unknown GPU, nothing to export)."""


# ---- symbolic sizes -----------------------------------------------------------------------------
class SymInt:
    """An integer expression over named sizes, built with + - * // (what Launch arithmetic uses).

    Constants fold; `code()` renders Python source that evaluates the same expression when the names
    are bound to ints or to TensorRT symbolic shape expressions (the symbolic operand is kept on the
    left of every operator, so no reflected operator of the shape-expression class is needed)."""

    def __init__(self, op, args):
        self.op, self.args = op, args          # op: "name" (args = (name,)) or one of + - * //

    @classmethod
    def name(cls, name: str) -> "SymInt":
        return cls("name", (name,))

    @staticmethod
    def _make(op, a, b):
        if isinstance(a, int) and isinstance(b, int):
            return {"+": a + b, "-": a - b, "*": a * b, "//": a // b}[op]
        if op in ("+", "-") and isinstance(b, int) and b == 0:
            return a
        if op in ("*", "//") and isinstance(b, int) and b == 1:
            return a
        if op == "*" and isinstance(a, int) and a == 1:
            return b
        if op in ("+", "*") and isinstance(a, int):           # keep the symbol on the left
            a, b = b, a
        if isinstance(a, int):
            raise TypeError(f"cannot render {a} {op} <symbolic>: the launch arithmetic must keep sizes "
                            f"on the left of - and //")
        # (x + c1) + c2 -> x + (c1 + c2): keeps rendered expressions short
        if op in ("+", "-") and isinstance(b, int) and isinstance(a, SymInt) and a.op in ("+", "-") \
                and isinstance(a.args[1], int):
            c = a.args[1] if a.op == "+" else -a.args[1]
            c = c + b if op == "+" else c - b
            return SymInt._make("+" if c >= 0 else "-", a.args[0], abs(c))
        return SymInt(op, (a, b))

    def __add__(self, o): return self._make("+", self, _check(o))
    def __radd__(self, o): return self._make("+", _check(o), self)
    def __sub__(self, o): return self._make("-", self, _check(o))
    def __rsub__(self, o): return self._make("-", _check(o), self)
    def __mul__(self, o): return self._make("*", self, _check(o))
    def __rmul__(self, o): return self._make("*", _check(o), self)
    def __floordiv__(self, o): return self._make("//", self, _check(o))
    def __rfloordiv__(self, o): return self._make("//", _check(o), self)

    def evaluate(self, env: dict):
        if self.op == "name":
            return env[self.args[0]]
        a, b = (x.evaluate(env) if isinstance(x, SymInt) else x for x in self.args)
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "//": lambda: a // b}[self.op]()

    def code(self) -> str:
        if self.op == "name":
            return self.args[0]
        a, b = (x.code() if isinstance(x, SymInt) else str(x) for x in self.args)
        return f"({a} {self.op} {b})"

    def __repr__(self):
        return f"SymInt({self.code()})"


def _check(o):
    if isinstance(o, bool) or not isinstance(o, (int, SymInt)):
        raise TypeError(f"SymInt arithmetic with {type(o).__name__}")
    return o


def code_of(value) -> str:
    return value.code() if isinstance(value, SymInt) else str(int(value))


def evaluate(value, env: dict) -> int:
    return value.evaluate(env) if isinstance(value, SymInt) else int(value)


class SymbolicProblem:
    """A Problem whose sizes N, C, H, W, C_out are SymInts; everything else (k, stride, padding,
    layout, dtype, ...) comes from the concrete problem. Enough for families' launch(). With
    exact_channels (a family compiled for the problem's C and C_out, serving only those) the channel
    counts stay ints: such launches may round them as the template does (odd 16-byte row strides)."""

    def __init__(self, problem: Problem, exact_channels: bool = False):
        self._problem = problem
        for n in SIZE_NAMES:
            setattr(self, n, getattr(problem, n) if exact_channels and n in ("C", "C_out") else SymInt.name(n))

    def __getattr__(self, name):          # only called for what __init__ did not set
        return getattr(self._problem, name)

    @property
    def H_out(self):
        p = self._problem
        return (self.H + 2 * p.padding - p.k) // p.stride + 1

    @property
    def W_out(self):
        p = self._problem
        return (self.W + 2 * p.padding - p.k) // p.stride + 1


def padded8(c):
    """TensorRT's HWC8 channel stride: C rounded up to a multiple of 8 (works on ints and SymInts)."""
    return (c + 7) // 8 * 8


def symbolic_launch(family, problem: Problem, config: dict) -> dict:
    """launch() on symbolic sizes: {'grid': (3 exprs), 'block': (3), 'shared_mem': expr}, each an int or
    a SymInt over N, C, H, W, C_out."""
    launch = family.launch(SymbolicProblem(problem, getattr(family, "exact_channels", False)), config)
    return {"grid": tuple(launch.grid), "block": tuple(launch.block), "shared_mem": launch.shared_mem}


def symbolic_args(problem: Problem, fmt: str) -> tuple:
    """The int32 extra arguments, kernel-signature order, for a TensorRT format."""
    s = SymbolicProblem(problem)
    ldx, ldy = (padded8(s.C), padded8(s.C_out)) if fmt == "HWC8" else (s.C, s.C_out)
    return (s.N, s.C, s.H, s.W, s.C_out, s.H_out, s.W_out, ldx, ldy)


# ---- formats and variant selection --------------------------------------------------------------
def trt_format(problem: Problem) -> str:
    if problem.layout == "nchw":
        return "LINEAR"
    return "HWC8" if problem.dtype == "float16" else "HWC"


def strides(problem: Problem, fmt: str) -> tuple:
    if fmt == "HWC8":
        return padded8(problem.C), padded8(problem.C_out)
    return problem.C, problem.C_out


def format_reason(family, problem: Problem, config: dict, ldx: int, ldy: int) -> str | None:
    """Why a configuration cannot run with channel strides ldx / ldy (NHWC), or None.

    check() assumes ldx = C and ldy = C_out; vector accesses must also divide the real strides
    (pointwise: vec_x | ldx, vec_y | ldy; depthwise NHWC: vec | ldx and ldy)."""
    reason = family.check(problem, config)
    if reason:
        return reason
    if getattr(family, "max_sm", None):     # (it also opts in to > 48 KB of shared memory, which TensorRT's launch does not)
        return f"{family.name} is compiled for one arch only (sm_{family.max_sm}a): not exported"
    shared = family.launch(problem, config).shared_mem
    if shared > kernels.MAX_SHARED_BYTES:   # TensorRT launches an AOT plugin's kernel without opting in
        return f"{shared} bytes of dynamic shared memory (over 48 KB): not exported"
    if problem.layout != "nhwc":
        return None
    if "vec_x" in config and ldx % config["vec_x"]:
        return f"vec_x={config['vec_x']} does not divide the padded stride ldx={ldx}"
    if "vec_y" in config and ldy % config["vec_y"]:
        return f"vec_y={config['vec_y']} does not divide the padded stride ldy={ldy}"
    if "vec" in config and (ldx % config["vec"] or ldy % config["vec"]):
        return f"vec={config['vec']} does not divide the padded strides ldx={ldx}, ldy={ldy}"
    return None


@dataclass
class Variant:
    problem: Problem
    fmt: str
    rank: int               # tactic number: 1 = best
    family: str
    config: dict
    time_us: float


def select_variants(store: Store, gid: str, problem: Problem, limit: int = MAX_TACTICS) -> list[Variant]:
    """The best verified variant of a problem, then the next fastest verified trials (distinct
    configurations), each valid for the problem's TensorRT format; at most `limit`."""
    fmt = trt_format(problem)
    ldx, ldy = strides(problem, fmt)
    families = {f.name: f for f in kernels.families_for(problem)}
    candidates = []
    best = store.best(gid, problem.key)
    if best is not None:
        candidates.append((best["family"], best["config"], best["time_us"]))
    ok = sorted((t for t in store.trials(gid, problem.key) if t["status"] == OK and t["time_us"] is not None),
                key=lambda t: (t["time_us"], t["id"]))
    candidates += [(t["family"], t["config"], t["time_us"]) for t in ok]
    out, seen = [], set()
    for family_name, config, time_us in candidates:
        key = (family_name, tuple(sorted(config.items())))
        if key in seen or family_name not in families:
            continue
        seen.add(key)
        if format_reason(families[family_name], problem, config, ldx, ldy) is not None:
            continue
        out.append(Variant(problem, fmt, len(out) + 1, family_name, config, time_us))
        if len(out) == limit:
            break
    return out


# ---- PTX ----------------------------------------------------------------------------------------
def trt_param_order(ptx: str, entry: str) -> str:
    """Reorder the .entry's parameter list from the project's signature (x, w, bias, y, 9 ints) to
    TensorRT's AOT plugin convention (inputs x, w, bias, the extra int32 arguments, outputs y).

    The body loads parameters by name, so moving a declaration changes only the ABI order."""
    m = re.search(r"(\.entry\s+" + re.escape(entry) + r"\s*\()([^)]*)(\))", ptx)
    if not m:
        raise ValueError(f"no .entry {entry} in the PTX")
    params = [p.strip() for p in m.group(2).split(",")]
    names = [p.split()[-1] for p in params]
    if names != [f"{entry}_param_{i}" for i in range(13)]:
        raise ValueError(f".entry {entry} has parameters {names}; expected the 13 of the kernel signature")
    order = [0, 1, 2, *range(4, 13), 3]
    body = ",\n\t".join(params[i] for i in order)
    return ptx[:m.start(2)] + "\n\t" + body + "\n" + ptx[m.end(2):]


def _arch(gpu: dict) -> str:
    return "compute_" + gpu["compute_capability"].replace(".", "")


# ---- the module ---------------------------------------------------------------------------------
def resolve_gpus(store: Store, gpu: str) -> list[dict]:
    gpus = store.gpus()
    if gpu == "all":
        chosen = gpus
    else:
        chosen = [g for g in gpus if gpu in (g["id"], g["name"])]
    if not chosen:
        known = ", ".join(repr(g["name"]) for g in gpus) or "none"
        raise ExportError(f"no GPU {gpu!r} in {store.path} (GPUs there: {known}; or pass 'all')")
    return chosen


LAUNCH_NAMES = ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem")


@dataclass
class PluginVariant:   # one exported variant, as both plugin exporters' templates see it
    gpu: str
    op: str
    k: int
    stride: int
    padding: int
    act: str
    act2: str
    expansion: int
    dtype: str
    fmt: str
    dims: dict
    divisors: dict     # runtime sizes the kernel needs divisible (family.divisors): checked before reuse
    exact_channels: bool   # compiled for dims' C and C_out (family.exact_channels): serves only those
    rank: int
    family: str
    config: str        # a Python dict literal
    time_us: float
    source: str = ""   # the kernel's CUDA source
    entry: str = ""    # its entry point
    kernel: object = None                         # the exporter's handle on the compiled kernel
    launch: dict = field(default_factory=dict)   # grid_x ... shared_mem -> SymInt/int, then source text
    args: list = field(default_factory=list)     # the 9 int32 arguments, likewise

    def rendered(self, kernel, to_code) -> "PluginVariant":
        """This variant with its kernel handle set and its expressions turned into source text."""
        return replace(self, kernel=kernel, launch={k: to_code(v) for k, v in self.launch.items()},
                       args=[to_code(a) for a in self.args])


def plugin_variants(store: Store, gpus: list[dict]) -> list[PluginVariant]:
    """Every variant to export, launch geometry and arguments still symbolic: for every tuned problem
    of a plugin op with bias (onnx_fuse always emits one) that is not TF32, the variants select_variants
    ranks."""
    from .. import codegen
    out = []
    for g in gpus:
        for row in sorted(store.best_rows(g["id"]), key=lambda r: r["problem"]):
            if not row["bias"] or row["op"] not in PLUGIN_OPS:
                continue
            problem = store.problem(row["problem"])
            if problem.tf32:
                continue
            for v in select_variants(store, g["id"], problem):
                family = kernels.family_named(v.family)
                launch = symbolic_launch(family, problem, v.config)
                out.append(PluginVariant(
                    gpu=g["id"], op=problem.op, k=problem.k, stride=problem.stride, padding=problem.padding,
                    act=problem.act, act2=problem.act2, expansion=problem.expansion, dtype=problem.dtype, fmt=v.fmt,
                    dims={n: getattr(problem, n) for n in SIZE_NAMES},
                    divisors={n: m for n, m in family.divisors(problem, v.config).items() if m > 1},
                    exact_channels=getattr(family, "exact_channels", False),
                    rank=v.rank, family=v.family,
                    config=repr(v.config), time_us=v.time_us,
                    source=codegen.render(family, problem, v.config).code, entry=family.entry,
                    launch=dict(zip(LAUNCH_NAMES, (*launch["grid"], *launch["block"], launch["shared_mem"]))),
                    args=list(symbolic_args(problem, v.fmt))))
    return out


def build_entries(store: Store, gpus: list[dict], jobs: int | None = None):
    """(entries, {kernel key: PTX}) for the Python module. Distinct kernels are compiled once each,
    in parallel."""
    from ..compiler import CompileError, compile_many
    arch_of = {g["id"]: _arch(g) for g in gpus}
    entries, sources = [], {}          # (code, arch) -> (key, entry)
    for v in plugin_variants(store, gpus):
        arch = arch_of[v.gpu]
        key = sources.setdefault((v.source, arch), (f"k{len(sources)}_{arch}", v.entry))[0]
        entries.append(v.rendered(key, code_of))
    ptx_table = {}
    by_arch = {}
    for (code, arch), (key, entry) in sources.items():
        by_arch.setdefault(arch, []).append((code, key, entry))
    for arch, items in by_arch.items():
        results = compile_many([code for code, _, _ in items], arch, jobs=jobs)
        for (code, key, entry), binary in zip(items, results):
            if isinstance(binary, Exception):
                raise CompileError(f"{key} ({arch}): {binary}")
            ptx_table[key] = trt_param_order(binary.image.decode(), entry)
    ptx_table = dict(sorted(ptx_table.items(), key=lambda kv: int(kv[0][1:].split("_")[0])))
    return entries, ptx_table


def render_module(entries, ptx_table, gpus, source: str) -> str:
    from ..codegen import _environment
    template = _environment().get_template(TEMPLATE)
    return template.render(entries=entries, ptx_table=ptx_table, gpus=[g["id"] for g in gpus],
                           gpu_names={g["id"]: g["name"] for g in gpus}, source=source,
                           max_tactics=MAX_TACTICS, repr=repr, pystr=python_string)


def export_python_plugins(store: Store, gpu: str, out_dir) -> Path:
    """Write out_dir/autotune_plugins.py for `gpu` (a name or id as stored, or 'all'); return its path."""
    gpus = resolve_gpus(store, gpu)
    entries, ptx_table = build_entries(store, gpus)
    if not entries:
        raise ExportError(f"nothing to export: no tuned problem with bias for {gpu!r} in {store.path}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODULE_NAME
    path.write_text(render_module(entries, ptx_table, gpus, str(store.path)))
    return path


def python_string(text: str) -> str:
    """A Python literal for text: a raw triple-quoted block when that is exact (PTX always is), else repr."""
    if '"""' not in text and "\\" not in text and "\r" not in text and not text.endswith('"'):
        return 'r"""' + text + '"""'
    return repr(text)

