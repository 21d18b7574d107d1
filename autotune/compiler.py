"""Compilation with NVRTC (through CuPy's bindings) for an explicit arch, with an on-disk cache.

Compiling needs no GPU: the arch is always named (sm_90 -> a cubin, compute_90 -> PTX). Results are
cached under $AUTOTUNE_CACHE_DIR (default ~/.cache/autotune/kernels), keyed by source, options, arch
and NVRTC version, so neither re-tuning nor lookup compiles the same kernel twice.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

BASE_OPTIONS = ("-std=c++17", "--use_fast_math", "-default-device")


class CompileError(RuntimeError):
    pass


@dataclass(frozen=True)
class Binary:
    arch: str              # "sm_90" (cubin) or "compute_90" (PTX)
    image: bytes
    registers: int | None  # from ptxas (cubin only)
    spill_bytes: int | None
    shared_bytes: int | None  # static shared memory
    log: str

    @property
    def is_ptx(self) -> bool:
        return self.arch.startswith("compute_")


def cache_dir() -> Path:
    path = Path(os.environ.get("AUTOTUNE_CACHE_DIR", Path.home() / ".cache" / "autotune" / "kernels"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def normalize_arch(arch: str) -> str:
    """'90', 'sm_90', 'sm90', '9.0' -> 'sm_90'; 'compute_90' stays."""
    a = str(arch).strip().lower()
    if a.startswith("compute_"):
        return a
    digits = a.replace("sm_", "").replace("sm", "").replace(".", "")
    if not re.fullmatch(r"\d{2,3}a?", digits):
        raise ValueError(f"arch: cannot read {arch!r}; use e.g. sm_90")
    return f"sm_{digits}"


def include_dirs() -> list[str]:
    """CUDA headers (cuda_fp16.h): the nvidia-cuda-runtime wheel first, then a local toolkit."""
    dirs = []
    try:
        import nvidia.cu13
        dirs += [os.path.join(p, "include") for p in nvidia.cu13.__path__]
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            dirs.append(os.path.join(root, "include"))
    dirs = [d for d in dirs if os.path.isfile(os.path.join(d, "cuda_fp16.h"))]
    if not dirs:
        raise CompileError("cuda_fp16.h not found: install nvidia-cuda-runtime (pip) or set CUDA_PATH")
    return dirs[:1]


def _nvrtc():
    from cupy_backends.cuda.libs import nvrtc
    return nvrtc


def nvrtc_version() -> str:
    return ".".join(map(str, _nvrtc().getVersion()))


def _cache_key(code: str, arch: str, options: tuple) -> str:
    h = hashlib.sha256()
    for part in (code, arch, "\0".join(options), nvrtc_version()):
        h.update(part.encode())
        h.update(b"\1")
    return h.hexdigest()[:32]


_PTXAS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill": re.compile(r"(\d+) bytes spill stores"),
    "shared": re.compile(r"(\d+) bytes smem"),
}


def _parse_resources(log: str) -> dict:
    def grab(name):
        m = _PTXAS[name].search(log)
        return int(m.group(1)) if m else None
    return {"registers": grab("registers"), "spill_bytes": grab("spill"), "shared_bytes": grab("shared") or 0}


# A template whose kernel uses features of one arch only (Hopper's wgmma) says so with this line; such
# sources are compiled for the arch-specific target (sm_90 -> sm_90a), whose code runs on that arch alone.
ARCH_SPECIFIC_MARK = "// autotune: arch-specific (compiled for sm_90a)"


def target_arch(code: str, arch: str) -> str:
    """The arch `code` is compiled for when `arch` is asked for."""
    arch = normalize_arch(arch)
    if ARCH_SPECIFIC_MARK in code and arch in ("sm_90", "compute_90"):
        return arch + "a"
    return arch


def compile_code(code: str, arch: str, options: tuple = (), name: str = "kernel.cu") -> Binary:
    """Compile (or fetch from the cache) one translation unit for `arch` (see target_arch)."""
    arch = target_arch(code, arch)
    options = tuple(BASE_OPTIONS) + tuple(options)
    key = _cache_key(code, arch, options)
    base = cache_dir() / key
    meta_path = base.with_suffix(".json")
    image_path = base.with_suffix(".ptx" if arch.startswith("compute_") else ".cubin")
    if meta_path.exists() and image_path.exists():
        meta = json.loads(meta_path.read_text())
        return Binary(arch=arch, image=image_path.read_bytes(), **meta)

    nvrtc = _nvrtc()
    full = list(options) + [f"-arch={arch}"] + [f"-I{d}" for d in include_dirs()]
    if arch.startswith("sm_"):
        full.append("--ptxas-options=-v")
    prog = nvrtc.createProgram(code, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, full)
        except Exception as exc:
            raise CompileError(f"{exc}\n{nvrtc.getProgramLog(prog)}") from None
        log = nvrtc.getProgramLog(prog)
        image = nvrtc.getPTX(prog) if arch.startswith("compute_") else nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if isinstance(image, str):
        image = image.encode()
    meta = {**_parse_resources(log), "log": log}
    _atomic_write(image_path, image)
    _atomic_write(meta_path, json.dumps(meta).encode())
    return Binary(arch=arch, image=image, **meta)


def _atomic_write(path: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)   # readers never see half a file, and parallel writers agree


def _compile_job(job):
    code, arch, options = job
    try:
        return compile_code(code, arch, options)
    except CompileError as exc:
        return exc


class ParallelCompiler:
    """A pool of compiler processes kept for a whole sweep (NVRTC holds the GIL while it works)."""

    def __init__(self, jobs: int | None = None):
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        # spawn, not fork: sweeps submit from several threads, and forking a threaded process can deadlock
        self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn")) \
            if self.jobs > 1 else None

    def compile(self, codes, arch: str, options: tuple = (), progress=None) -> list:
        """Each result is a Binary or a CompileError, in the order of `codes`."""
        work = [(code, normalize_arch(arch), tuple(options)) for code in codes]
        results = map(_compile_job, work) if self._pool is None or len(work) <= 1 else \
            self._pool.map(_compile_job, work, chunksize=1)
        out = []
        for result in results:
            out.append(result)
            if progress:
                progress(1)
        return out

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def compile_many(codes, arch: str, options: tuple = (), jobs: int | None = None, progress=None) -> list:
    """Compile many sources in parallel across CPU cores; each result is a Binary or a CompileError."""
    with ParallelCompiler(jobs) as compiler:
        return compiler.compile(codes, arch, options, progress)


def binary_summary(binary: Binary) -> dict:
    d = asdict(binary)
    d.pop("image")
    d.pop("log")
    return d
