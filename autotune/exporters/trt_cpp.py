"""Export tuned kernels as a TensorRT C++ plugin library source (IPluginV3, for `trtexec --dynamicPlugins`).

    from autotune.store import Store
    from autotune.exporters.trt_cpp import export_cpp_plugins
    path = export_cpp_plugins(Store("tuned_db/autotune.db", readonly=True), "NVIDIA H200", "out/")

writes out/cpp/ (templates: templates/trt_cpp/):
  - autotune_kernels.h: the selected variants (the same ones, chosen the same way, as the Python plugin
    module: `trt_python.select_variants`), each kernel embedded twice as a C byte array - a cubin for the
    GPU's sm_XX and PTX for compute_XX (the driver JIT-compiles it where the cubin does not load) - and,
    per variant, launch geometry and the 9 int32 arguments as C++ functions of N, C, H, W, C_out (the
    family's launch() on `trt_python.SymInt` sizes, rendered by `cpp_code`). It includes only <cstdint>
    and <cstddef>, so it compiles (and is tested) without TensorRT or CUDA.
  - autotune_plugins.cpp: IPluginV3 (IPluginV3OneCore/Build/Runtime) plugins "autotune::dw_conv2d" and
    "autotune::pw_conv2d" version "1", their IPluginCreatorV3One creators, and the extern "C" entry
    points getCreators / setLoggerFinder. Kernels are loaded with cuModuleLoadData and launched with
    cuLaunchKernel in the project's own kernel signature order (no reordering: the plugin calls them).
  - CMakeLists.txt: `cmake -DTENSORRT_INCLUDE_DIR=/path/to/TensorRT/include ..` builds
    libautotune_trt_plugins.so (links only the CUDA driver library; TensorRT's interfaces are virtual).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..store import Store
from .trt_python import MAX_TACTICS, PLUGIN_OPS, ExportError, SymInt, plugin_variants, resolve_gpus

CPP_DIR = "cpp"
FILES = {"autotune_kernels.h": "trt_cpp/kernels.h.j2",
         "autotune_plugins.cpp": "trt_cpp/plugin.cpp.j2",
         "CMakeLists.txt": "trt_cpp/CMakeLists.txt.j2"}
FORMATS = ("LINEAR", "HWC", "HWC8")       # index = the generated header's format code
DTYPES = ("float32", "float16")
ACTS = ("none", "relu", "relu6")


# ---- C++ rendering of symbolic sizes ------------------------------------------------------------
def cpp_code(value) -> str:
    """C++ source (int64_t arithmetic) for an int or a SymInt over N, C, H, W, C_out. Python's // is
    rendered as floordiv(a, b), a helper of the generated header, so negative operands round the same."""
    if not isinstance(value, SymInt):
        return f"int64_t({int(value)})"
    if value.op == "name":
        return value.args[0]
    a, b = (cpp_code(x) if isinstance(x, SymInt) else str(int(x)) for x in value.args)
    if value.op == "//":
        return f"floordiv({a}, {b})"
    return f"({a} {value.op} {b})"


def _sm(gpu: dict) -> str:
    return gpu["compute_capability"].replace(".", "")


@dataclass
class KernelImage:
    key: str
    entry: str
    sm: str            # "90"
    cubin: bytes
    ptx: bytes         # NUL-terminated


def build_cpp_entries(store: Store, gpus: list[dict], jobs: int | None = None):
    """(variants, kernel images) for every tuned problem with bias, as `trt_python.build_entries` selects
    them; each distinct (kernel source, arch) is compiled once to a cubin and once to PTX."""
    from ..compiler import CompileError, compile_many
    sm_of = {g["id"]: _sm(g) for g in gpus}
    variants, sources = [], {}           # (code, sm) -> (index, entry)
    for v in plugin_variants(store, gpus):
        index = sources.setdefault((v.source, sm_of[v.gpu]), (len(sources), v.entry))[0]
        variants.append(v.rendered(index, cpp_code))
    images = [None] * len(sources)
    by_sm = {}
    for (code, sm), (index, entry) in sources.items():
        by_sm.setdefault(sm, []).append((code, index, entry))
    for sm, items in by_sm.items():
        codes = [code for code, _, _ in items]
        cubins = compile_many(codes, f"sm_{sm}", jobs=jobs)
        ptxs = compile_many(codes, f"compute_{sm}", jobs=jobs)
        for (code, index, entry), cubin, ptx in zip(items, cubins, ptxs):
            for binary, arch in ((cubin, f"sm_{sm}"), (ptx, f"compute_{sm}")):
                if isinstance(binary, Exception):
                    raise CompileError(f"kernel {index} ({arch}): {binary}")
            images[index] = KernelImage(key=f"k{index}_sm{sm}", entry=entry, sm=sm, cubin=cubin.image,
                                        ptx=ptx.image.rstrip(b"\0") + b"\0")
    return variants, images


def c_bytes(data: bytes, per_line: int = 16) -> str:
    """The body of a C array initializer: hex bytes, `per_line` a line, indented 4 spaces."""
    lines = []
    for i in range(0, len(data), per_line):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in data[i:i + per_line]) + ",")
    return "\n".join(lines)


def c_string(text: str) -> str:
    """A C string literal for plain ASCII text (names, configs)."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    if not out.isascii():
        raise ValueError(f"not ASCII: {text!r}")
    return f'"{out}"'


def render_files(variants, images, gpus, source: str) -> dict:
    from ..codegen import _environment
    env = _environment()
    context = dict(variants=variants, images=images, gpus=[g["id"] for g in gpus],
                   gpu_names={g["id"]: g["name"] for g in gpus}, source=source, max_tactics=MAX_TACTICS,
                   formats=FORMATS, dtypes=DTYPES, ops=PLUGIN_OPS, acts=ACTS, c_bytes=c_bytes, c_string=c_string)
    return {name: env.get_template(template).render(**context) for name, template in FILES.items()}


def export_cpp_plugins(store: Store, gpu: str, out_dir) -> Path:
    """Write out_dir/cpp/ (plugin source, kernel header, CMakeLists.txt) for `gpu` (a name or id as
    stored, or 'all'); return the directory."""
    gpus = resolve_gpus(store, gpu)
    variants, images = build_cpp_entries(store, gpus)
    if not variants:
        raise ExportError(f"nothing to export: no tuned problem with bias for {gpu!r} in {store.path}")
    out = Path(out_dir) / CPP_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_files(variants, images, gpus, str(store.path)).items():
        (out / name).write_text(text)
    return out
