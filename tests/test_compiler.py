"""NVRTC compilation without a GPU: arch names, headers, the on-disk cache, errors."""
import os

import pytest

from autotune import compiler
from autotune.compiler import CompileError, compile_code, compile_many, normalize_arch

SOURCE = r"""
#include <cuda_fp16.h>
extern "C" __global__ void axpy(const __half* x, float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * __half2float(x[i]);
}
"""

BROKEN = r"""
extern "C" __global__ void broken(float* y) {
    y[threadIdx.x] = undeclared_identifier_xyz;
}
"""


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A cache of this test's own, so that the first compile really compiles."""
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


class _VersionOnlyNVRTC:
    """Stands in for NVRTC once the cache is warm: the cache key still asks for the version, but
    any compilation fails the test."""

    def __init__(self, real):
        self._real = real
        self.calls = []

    def getVersion(self):
        return self._real.getVersion()

    def __getattr__(self, name):
        self.calls.append(name)
        raise AssertionError(f"NVRTC's {name} called despite a cache hit")


# ---- arch names -------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["90", "sm_90", "sm90", "SM_90", " sm_90 ", "9.0", 90])
def test_normalize_arch_accepts(text):
    assert normalize_arch(text) == "sm_90"


@pytest.mark.parametrize("text,arch", [("80", "sm_80"), ("8.6", "sm_86"), ("sm_89", "sm_89"),
                                        ("90a", "sm_90a"), ("sm_90a", "sm_90a"), ("100", "sm_100"),
                                        ("12.0", "sm_120"), ("compute_90", "compute_90")])
def test_normalize_arch_others(text, arch):
    assert normalize_arch(text) == arch


@pytest.mark.parametrize("text", ["", "garbage", "ampere", "sm_", "sm_9", "9", "sm_9x", "1000",
                                  "sm_90_a", "9.0.1x", "-90"])
def test_normalize_arch_rejects(text):
    with pytest.raises(ValueError, match="arch"):
        normalize_arch(text)


# ---- headers ----------------------------------------------------------------------------------
def test_include_dirs_find_cuda_fp16():
    dirs = compiler.include_dirs()
    assert dirs
    assert os.path.isfile(os.path.join(dirs[0], "cuda_fp16.h"))


# ---- outputs by arch --------------------------------------------------------------------------
def test_cubin_for_sm_arch(fresh_cache):
    b = compile_code(SOURCE, "sm_90")
    assert b.arch == "sm_90" and not b.is_ptx
    assert b.image[:4] == b"\x7fELF"
    assert isinstance(b.registers, int) and 0 < b.registers <= 255
    assert b.spill_bytes == 0
    assert "sm_90" in b.log and "registers" in b.log
    assert compiler.binary_summary(b)["registers"] == b.registers
    assert "image" not in compiler.binary_summary(b)


def test_ptx_for_compute_arch(fresh_cache):
    b = compile_code(SOURCE, "compute_90")
    assert b.arch == "compute_90" and b.is_ptx
    text = b.image.decode().rstrip("\0")
    assert ".target sm_90" in text
    assert ".entry axpy" in text
    assert b.registers is None and b.spill_bytes is None


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_arch_is_the_target(fresh_cache, arch):
    b = compile_code(SOURCE, arch.replace("sm_", ""))
    assert b.arch == arch
    assert f"for '{arch}'" in b.log


# ---- cache ------------------------------------------------------------------------------------
def test_cache_hit_skips_nvrtc(fresh_cache, monkeypatch):
    first = compile_code(SOURCE, "sm_90")
    files = sorted(p.name for p in fresh_cache.iterdir())
    assert any(f.endswith(".cubin") for f in files) and any(f.endswith(".json") for f in files)

    stub = _VersionOnlyNVRTC(compiler._nvrtc())
    monkeypatch.setattr(compiler, "_nvrtc", lambda: stub)
    second = compile_code(SOURCE, "sm_90")
    assert stub.calls == []
    assert second == first                    # same image, resources and log
    assert sorted(p.name for p in fresh_cache.iterdir()) == files
    # The same arch spelled differently is the same entry.
    assert compile_code(SOURCE, "9.0").image == first.image
    # Something not yet cached does go to NVRTC.
    with pytest.raises(AssertionError, match="despite a cache hit"):
        compile_code(SOURCE, "sm_80")


def test_cache_key_depends_on_source_arch_and_options():
    base = compiler._cache_key(SOURCE, "sm_90", ("-O3",))
    assert compiler._cache_key(SOURCE, "sm_90", ("-O3",)) == base
    others = {
        compiler._cache_key(SOURCE + "\n", "sm_90", ("-O3",)),
        compiler._cache_key(SOURCE, "sm_80", ("-O3",)),
        compiler._cache_key(SOURCE, "compute_90", ("-O3",)),
        compiler._cache_key(SOURCE, "sm_90", ()),
        compiler._cache_key(SOURCE, "sm_90", ("-O3", "-lineinfo")),
        compiler._cache_key(SOURCE, "sm_90", ("-O", "3")),
    }
    assert base not in others and len(others) == 6


def test_cache_entries_per_arch_and_options(fresh_cache):
    compile_code(SOURCE, "sm_90")
    compile_code(SOURCE, "sm_80")
    compile_code(SOURCE, "sm_90", ("-lineinfo",))
    compile_code(SOURCE, "compute_90")
    names = [p.name for p in fresh_cache.iterdir() if not p.name.startswith(".")]
    assert len([n for n in names if n.endswith(".json")]) == 4
    assert len([n for n in names if n.endswith(".cubin")]) == 3
    assert len([n for n in names if n.endswith(".ptx")]) == 1


def test_options_reach_nvrtc(fresh_cache):
    with pytest.raises(CompileError):
        compile_code(SOURCE, "sm_90", ("--no-such-nvrtc-option",))
    scaled = SOURCE.replace("a * __half2float", "A_SCALE * a * __half2float")
    with pytest.raises(CompileError, match="A_SCALE"):
        compile_code(scaled, "sm_90")
    b = compile_code(scaled, "sm_90", ("-DA_SCALE=2.0f",))
    assert b.image[:4] == b"\x7fELF"


# ---- errors -----------------------------------------------------------------------------------
def test_compile_error_carries_the_log(fresh_cache):
    with pytest.raises(CompileError) as info:
        compile_code(BROKEN, "sm_90")
    message = str(info.value)
    assert "undeclared_identifier_xyz" in message
    assert "error" in message
    # Nothing is cached for a failure, and it fails again the same way.
    assert not [p for p in fresh_cache.iterdir() if p.suffix in (".json", ".cubin")]
    with pytest.raises(CompileError, match="undeclared_identifier_xyz"):
        compile_code(BROKEN, "sm_90")


def test_compile_many_keeps_order_and_returns_errors(fresh_cache):
    sources = [SOURCE, BROKEN, SOURCE.replace("axpy", "axpy2")]
    seen = []
    results = compile_many(sources, "90", jobs=2, progress=seen.append)
    assert sum(seen) == 3
    assert [type(r).__name__ for r in results] == ["Binary", "CompileError", "Binary"]
    assert results[0].arch == results[2].arch == "sm_90"
    assert "undeclared_identifier_xyz" in str(results[1])
    assert b"axpy2" in results[2].image and b"axpy2" not in results[0].image
    # Serial gives the same answers (now from the cache).
    serial = compile_many(sources, "sm_90", jobs=1)
    assert serial[0] == results[0] and serial[2] == results[2]
    assert isinstance(serial[1], CompileError)


def test_arch_specific_sources_compile_for_the_a_target(fresh_cache):
    """A source marked as using one arch's own instructions (the wgmma template) compiles for sm_90a when sm_90
    is asked for; other sources and other archs are left alone."""
    marked = compiler.ARCH_SPECIFIC_MARK + "\n" + SOURCE
    assert compiler.target_arch(marked, "sm_90") == "sm_90a" and compiler.target_arch(marked, "90") == "sm_90a"
    assert compiler.target_arch(marked, "compute_90") == "compute_90a"
    assert compiler.target_arch(SOURCE, "sm_90") == "sm_90" and compiler.target_arch(marked, "sm_80") == "sm_80"
    b = compile_code(marked, "sm_90")
    assert b.arch == "sm_90a" and "for 'sm_90a'" in b.log
    from autotune import codegen
    from autotune.kernels.pointwise import WGMMA_FAMILY
    from autotune.problem import Problem
    p = Problem(op="pw", N=2, C=64, H=8, W=8, C_out=32, dtype="float16", layout="nhwc")
    assert compiler.ARCH_SPECIFIC_MARK in codegen.render(WGMMA_FAMILY, p, WGMMA_FAMILY.default_config(p)).code
