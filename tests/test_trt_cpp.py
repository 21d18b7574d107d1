"""`autotune export-trt`'s C++ plugin library source (OUT/cpp/), on the CPU: the kernel header embeds
exactly the variants `select_variants` picks (cubin for sm_90 and PTX, byte for byte what the compiler
produces), its launch/argument functions - compiled with the host C++ compiler - agree with the kernel
families' launch() on concrete sizes, and, where TensorRT's headers are given (env TENSORRT_INCLUDE_DIR),
the plugin compiles into a shared library whose creators round-trip their fields. Nothing here runs
under real TensorRT or on a GPU."""
import json
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from autotune import codegen, kernels
from autotune.compiler import compile_code
from autotune.exporters.trt_cpp import cpp_code, export_cpp_plugins
from autotune.exporters.trt_python import SymInt, select_variants, symbolic_args, symbolic_launch
from autotune.kernels import scalar_args
from autotune.store import Store
from test_trt_python import PROBLEMS, db  # noqa: F401  (db is a fixture)

@pytest.fixture(scope="module")
def cpp_dir(db, tmp_path_factory):   # noqa: F811
    path, _, _ = db
    return export_cpp_plugins(Store(path, readonly=True), "Test GPU", tmp_path_factory.mktemp("cpp_out"))


@pytest.fixture(scope="module")
def header(cpp_dir):
    return (cpp_dir / "autotune_kernels.h").read_text()


def parse_variants(header: str) -> list[dict]:
    """The kVariants rows of the generated header."""
    body = header[header.index("kVariants[] = {"):]
    rows = re.findall(r'\{"([^"]*)", kOP_(\w+), (\d+), (\d+), (\d+), kACT_(\w+), kACT_(\w+), (\d+), kDTYPE_(\w+), '
                      r'kFORMAT_(\w+),\s*\{([\d, ]+)\},\s*\{([\d, ]+)\}, (true|false), (\d+), "([^"]*)",\s*"([^"]*)", '
                      r'([\d.e+-]+), (\d+), geometry_(\d+), args_(\d+)\}', body)
    out = []
    for r in rows:
        divisors = dict(zip(("C", "C_out", "W", "W_out", "HW"), (int(x) for x in r[11].split(","))))
        out.append(dict(gpu=r[0], op=r[1].lower(), k=int(r[2]), stride=int(r[3]), padding=int(r[4]),
                        act=r[5].lower(), act2=r[6].lower(), expansion=int(r[7]), dtype=r[8].lower(), fmt=r[9],
                        dims=[int(x) for x in r[10].split(",")], divisors={n: m for n, m in divisors.items() if m > 1},
                        exact=r[12] == "true", tactic=int(r[13]), family=r[14], config=eval(r[15]),
                        time_us=float(r[16]), kernel=int(r[17]), index=int(r[18])))
        assert r[18] == r[19]
    return out


def parse_array(header: str, name: str) -> bytes:
    m = re.search(r"unsigned char " + re.escape(name) + r"\[(\d+)\] = \{\n(.*?)\n\};", header, re.S)
    assert m, name
    data = bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", m.group(2)))
    assert len(data) == int(m.group(1))
    return data


def parse_kernels(header: str) -> list[tuple]:
    body = header[header.index("kKernels[] = {"):]
    return re.findall(r'\{"(k\d+_sm\d+)", "(\w+)", (\d+), \1_cubin, sizeof\(\1_cubin\), \1_ptx, sizeof\(\1_ptx\)\}',
                      body)


# ---- (a) generated sources and the kernel header ---------------------------------------------------
def test_sources_exist(cpp_dir):
    assert cpp_dir.name == "cpp"
    for name in ("autotune_plugins.cpp", "autotune_kernels.h", "CMakeLists.txt"):
        assert (cpp_dir / name).stat().st_size > 0
    cpp = (cpp_dir / "autotune_plugins.cpp").read_text()
    for needle in ('extern "C" AUTOTUNE_EXPORT IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)',
                   'extern "C" AUTOTUNE_EXPORT void setLoggerFinder(ILoggerFinder* finder)',
                   "public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime",
                   "class ConvCreator : public IPluginCreatorV3One", 'kNAMESPACE[] = "autotune"',
                   '"dw_conv2d", "pw_conv2d", "dwpw_conv2d", "ir_conv2d"', 'kVERSION[] = "1"', "cuModuleLoadData",
                   "cuLaunchKernel", "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES"):
        assert needle in cpp, needle
    cmake = (cpp_dir / "CMakeLists.txt").read_text()
    assert "TENSORRT_INCLUDE_DIR" in cmake and "CUDA::cuda_driver" in cmake


def test_header_embeds_exactly_the_selected_variants(db, header):  # noqa: F811
    path, gid, expected = db
    store = Store(path, readonly=True)
    rows = parse_variants(header)
    images = parse_kernels(header)
    assert len(images) == len({(r["kernel"]) for r in rows}) == header.count("_cubin[")
    seen = set()
    for name, p in PROBLEMS.items():
        want = select_variants(store, gid, p)
        assert [(v.family, v.config) for v in want] == expected[name]
        got = [r for r in rows if r["op"] == p.op and r["dims"] == [p.N, p.C, p.H, p.W, p.C_out]
               and r["dtype"] == p.dtype and r["act"] == p.act and r["k"] == p.k
               and (r["act2"], r["expansion"]) == (p.act2, p.expansion)]
        assert [(r["family"], r["config"], r["tactic"], r["fmt"]) for r in got] == \
            [(v.family, v.config, v.rank, v.fmt) for v in want], name
        for r, v in zip(got, want):
            assert r["gpu"] == gid and (r["stride"], r["padding"]) == (p.stride, p.padding)
            assert r["divisors"] == {n: m for n, m in kernels.family_named(v.family).divisors(p, v.config).items()
                                     if m > 1}
            assert r["exact"] == getattr(kernels.family_named(v.family), "exact_channels", False) == (p.op != "dw" and (
                p.op != "pw" or v.family == "pointwise_tc_stream"))
            assert r["time_us"] == pytest.approx(v.time_us)
            key, entry, sm = images[r["kernel"]]
            family = kernels.family_named(v.family)
            assert entry == family.entry and sm == "90" and key == f"k{r['kernel']}_sm90"
            code = codegen.render(family, p, v.config).code
            assert parse_array(header, key + "_cubin") == compile_code(code, "sm_90").image
            ptx = parse_array(header, key + "_ptx")
            assert ptx.endswith(b"\0") and ptx.count(b"\0") == 1
            assert ptx[:-1] == compile_code(code, "compute_90").image.rstrip(b"\0")
            assert f".entry {entry}(" in ptx.decode()
            seen.add(r["index"])
    # nothing else: the bias-less problem is not exported
    assert seen == {r["index"] for r in rows} and len(rows) == sum(map(len, expected.values()))


def _geometry_source(header: str, index: int) -> tuple[list[str], list[str]]:
    g = re.search(r"inline Geometry geometry_%d\(Sizes const& s\)\n\{.*?return Geometry\{\{(.*?)\},\s*\{(.*?)\},\s*"
                  r"(.*?)\};\n\}" % index, header, re.S)
    a = re.search(r"inline void args_%d\(.*?\n\}" % index, header, re.S)
    geometry = [*_split(g.group(1)), *_split(g.group(2)), g.group(3).strip()]
    args = re.findall(r"a\[\d\] = static_cast<int32_t>\((.*)\);", a.group(0))
    return geometry, args


def _split(text):
    """Split a C++ brace list at top-level commas."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return [*parts, cur.strip()]


def _py(expr: str, env: dict) -> int:
    """Evaluate a generated C++ expression in Python (floordiv = //, int64_t(x) = x)."""
    return eval(expr, {"floordiv": lambda a, b: a // b, "int64_t": int}, dict(env))


def test_launch_expressions_match_the_families(db, header):  # noqa: F811
    """The generated C++ expressions are the SymInt expressions of the family's launch(), and evaluate
    (as Python) to the family's launch() on concrete problems of other sizes."""
    path, gid, _ = db
    store = Store(path, readonly=True)
    rows = parse_variants(header)
    rng = random.Random(0)
    for name, p in PROBLEMS.items():
        for v in select_variants(store, gid, p):
            row = next(r for r in rows if r["family"] == v.family and r["config"] == v.config
                       and r["dims"] == [p.N, p.C, p.H, p.W, p.C_out] and r["op"] == p.op and r["act"] == p.act)
            geometry, args = _geometry_source(header, row["index"])
            family = kernels.family_named(v.family)
            sym = symbolic_launch(family, p, v.config)
            assert geometry == [cpp_code(x) for x in (*sym["grid"], *sym["block"], sym["shared_mem"])]
            assert args == [cpp_code(x) for x in symbolic_args(p, v.fmt)]
            for _ in range(5):
                sizes = dict(N=rng.randint(1, 4), C=rng.choice([8, 16, 24, 40, 64]), H=rng.randint(5, 40),
                             W=rng.randint(5, 40))
                sizes["C_out"] = rng.choice([8, 24, 48]) if p.op != "dw" else sizes["C"]
                if getattr(family, "exact_channels", False):    # it serves only its own channel counts
                    sizes.update(C=p.C, C_out=p.C_out)
                q = replace(p, **sizes)
                launch = family.launch(q, v.config)
                assert [_py(e, sizes) for e in geometry] == [*launch.grid, *launch.block, launch.shared_mem]
                ld = trt_cpp_strides(q, v.fmt)
                assert [_py(e, sizes) for e in args] == list(scalar_args(q, *ld))


def trt_cpp_strides(q, fmt):
    from autotune.exporters.trt_python import strides
    return strides(q, fmt)


def test_cpp_code_floordiv():
    x = SymInt.name("H")
    assert cpp_code((x + 2 - 5) // 2 + 1) == "(floordiv((H - 3), 2) + 1)"
    assert cpp_code(7) == "int64_t(7)"
    assert cpp_code(x * 4) == "(H * 4)"


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler (g++)")
def test_header_compiles_and_computes_the_same_launches(db, header, cpp_dir, tmp_path):  # noqa: F811
    """Compile autotune_kernels.h (no TensorRT, no CUDA needed) with a small driver printing every
    variant's geometry and arguments for a few sizes; compare with Python's launch()."""
    rows = parse_variants(header)
    rng = random.Random(1)
    cases = []
    for r in rows:
        for _ in range(3):
            s = dict(N=rng.randint(1, 4), C=rng.choice([8, 16, 24, 32]), H=rng.randint(3, 50), W=rng.randint(3, 50))
            s["C_out"] = rng.choice([8, 16, 40]) if r["op"] != "dw" else s["C"]
            if getattr(kernels.family_named(r["family"]), "exact_channels", False):   # serves only its own
                s.update(C=r["dims"][1], C_out=r["dims"][4])
            cases.append((r["index"], s))
    driver = tmp_path / "driver.cpp"
    driver.write_text(
        '#include "autotune_kernels.h"\n#include <cstdio>\nusing namespace autotune_trt;\nint main() {\n'
        + "".join(
            f'  {{ Sizes s{{{s["N"]}, {s["C"]}, {s["H"]}, {s["W"]}, {s["C_out"]}}}; Variant const& v = kVariants[{i}];'
            f' Geometry g = v.geometry(s); int32_t a[9]; v.args(s, a);'
            f' std::printf("%lld %lld %lld %lld %lld %lld %lld", (long long)g.grid[0], (long long)g.grid[1],'
            f' (long long)g.grid[2], (long long)g.block[0], (long long)g.block[1], (long long)g.block[2],'
            f' (long long)g.shared_mem); for (int j = 0; j < 9; ++j) std::printf(" %d", a[j]);'
            f' std::printf("\\n"); }}\n'
            for i, s in cases)
        + '  std::printf("%d %d %d\\n", kNbGpus, kNbKernels, kNbVariants);\n}\n')
    exe = tmp_path / "driver"
    subprocess.run(["g++", "-std=c++17", "-O0", "-Wall", "-Werror", "-I", str(cpp_dir), str(driver), "-o", str(exe)],
                   check=True, capture_output=True)
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()
    assert lines[-1] == f"1 {len(parse_kernels(header))} {len(rows)}"
    for (i, s), line in zip(cases, lines):
        r = rows[i]
        p = next(p for p in PROBLEMS.values() if [p.N, p.C, p.H, p.W, p.C_out] == r["dims"] and p.op == r["op"]
                 and p.act == r["act"] and p.k == r["k"])
        q = replace(p, **s)
        launch = kernels.family_named(r["family"]).launch(q, r["config"])
        want = [*launch.grid, *launch.block, launch.shared_mem, *scalar_args(q, *trt_cpp_strides(q, r["fmt"]))]
        assert [int(x) for x in line.split()] == want, (r["family"], r["config"], s)


# ---- (b) the plugin against TensorRT's headers -----------------------------------------------------
CUDA_STUB = r"""
// A stand-in libcuda for linking and loading the plugin on a machine without a GPU driver: every call fails.
#include <cuda.h>
extern "C" {
CUresult cuInit(unsigned int) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuGetErrorName(CUresult, const char** s) { *s = "CUDA_ERROR_STUB"; return CUDA_SUCCESS; }
CUresult cuGetErrorString(CUresult, const char** s) { *s = "stub libcuda"; return CUDA_SUCCESS; }
CUresult cuCtxGetDevice(CUdevice*) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuCtxGetCurrent(CUcontext*) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuDeviceGet(CUdevice*, int) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuDeviceGetName(char*, int, CUdevice) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuDeviceGetAttribute(int*, CUdevice_attribute, CUdevice) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleLoadData(CUmodule*, const void*) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleGetFunction(CUfunction*, CUmodule, const char*) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleUnload(CUmodule) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuFuncSetAttribute(CUfunction, CUfunction_attribute, int) { return CUDA_ERROR_NO_DEVICE; }
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                        void**, void**) { return CUDA_ERROR_NO_DEVICE; }
}
"""


def _trt_include():
    d = os.environ.get("TENSORRT_INCLUDE_DIR")
    if not d:
        pytest.skip("set TENSORRT_INCLUDE_DIR to TensorRT's include directory (NvInferRuntime.h) to compile the "
                    "C++ plugin; TensorRT is not installed here")
    if not (Path(d) / "NvInferRuntime.h").is_file():
        pytest.fail(f"TENSORRT_INCLUDE_DIR={d} has no NvInferRuntime.h")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    return d


@pytest.fixture(scope="module")
def plugin_so(cpp_dir, tmp_path_factory):
    """The plugin compiled with nvcc into a shared library. It links -lcuda: the real driver library where
    the linker finds one, else a stub libcuda.so.1 built here (then `stub` is its directory)."""
    include = _trt_include()
    work = tmp_path_factory.mktemp("so")
    stub = None
    if not _have_libcuda():
        stub = work / "stub"
        stub.mkdir()
        (stub / "cuda_stub.cpp").write_text(CUDA_STUB)
        subprocess.run(["nvcc", "-shared", "-Xcompiler", "-fPIC", "-Xlinker", "-soname=libcuda.so.1",
                        str(stub / "cuda_stub.cpp"), "-o", str(stub / "libcuda.so")], check=True, capture_output=True)
        os.symlink("libcuda.so", stub / "libcuda.so.1")
    so = work / "libautotune_trt_plugins.so"
    cmd = ["nvcc", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
           "-I" + include, "-I" + str(cpp_dir),
           str(cpp_dir / "autotune_plugins.cpp"), "-o", str(so), *(["-L" + str(stub)] if stub else []), "-lcuda"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return so, stub, include


def _have_libcuda():
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return "libcuda.so " in out or "libcuda.so\t" in out


def test_plugin_compiles_against_tensorrt_headers(plugin_so):
    so, _, include = plugin_so
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
    assert re.search(r"\bT getCreators$", symbols, re.M) and re.search(r"\bT setLoggerFinder$", symbols, re.M)
    version = (Path(include) / "NvInferVersion.h").read_text()
    print("compiled against", re.findall(r"#define TRT_(?:MAJOR|MINOR|PATCH)_\w+ (\d+)", version))


# ---- (c) fields round trip through the compiled creators --------------------------------------------
HARNESS = r"""
// Loads the plugin library, creates each plugin from fields, serializes, re-creates from what was
// serialized, and asks supportsFormatCombination - everything that needs neither a GPU nor libnvinfer.
#include <NvInferRuntime.h>
#include <dlfcn.h>
#include <cstdio>
#include <cstring>
#include <string>
using namespace nvinfer1;

static void dump(char const* tag, PluginFieldCollection const* fc)
{
    std::printf("{\"tag\": \"%s\", \"fields\": {", tag);
    for (int i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        std::printf("%s\"%s\": ", i ? ", " : "", f.name);
        if (f.data == nullptr) std::printf("null");
        else if (f.type == PluginFieldType::kINT32) std::printf("%d", *static_cast<int32_t const*>(f.data));
        else if (f.type == PluginFieldType::kCHAR)
            std::printf("\"%s\"", std::string(static_cast<char const*>(f.data), strnlen(static_cast<char const*>(f.data), f.length)).c_str());
        else std::printf("null");
    }
    std::printf("}}\n");
}

int main(int argc, char** argv)
{
    void* lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { std::printf("dlopen: %s\n", dlerror()); return 1; }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    if (!getCreators || !dlsym(lib, "setLoggerFinder")) { std::printf("missing entry points\n"); return 1; }
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        std::string const name = c->getPluginName();
        std::printf("{\"creator\": \"%s::%s\", \"version\": \"%s\", \"interface\": \"%s\"}\n", c->getPluginNamespace(),
            name.c_str(), c->getPluginVersion(), c->getInterfaceInfo().kind);
        dump(("names_" + name).c_str(), c->getFieldNames());
        // each op's fields as onnx-fuse writes them, matching the test database's tuned problems
        bool const pw = name == "pw_conv2d", dwpw = name == "dwpw_conv2d", ir = name == "ir_conv2d";
        int32_t kernel = pw ? 1 : 3, stride = dwpw ? 2 : 1, padding = pw ? 0 : 1, aot = 1, expansion = 4;
        int32_t cout = ir ? 12 : dwpw ? 16 : 20, channels = ir ? 12 : dwpw ? 24 : 16;
        char const* act = dwpw ? "relu" : "relu6";
        char const* act2 = dwpw ? "relu" : "none";
        char const layout[] = "nchw";
        PluginField fields[] = {{"kernel", &kernel, PluginFieldType::kINT32, 1},
            {"stride", &stride, PluginFieldType::kINT32, 1}, {"padding", &padding, PluginFieldType::kINT32, 1},
            {"act", act, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(act))},
            {"layout", layout, PluginFieldType::kCHAR, 4}, {"aot", &aot, PluginFieldType::kINT32, 1},
            {"C_out", &cout, PluginFieldType::kINT32, 1},
            {"act2", act2, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(act2))},
            {"expansion", &expansion, PluginFieldType::kINT32, 1}};
        PluginFieldCollection fc{ir ? 9 : dwpw ? 8 : pw ? 7 : 6, fields};
        IPluginV3* p = c->createPlugin("node", &fc, TensorRTPhase::kBUILD);
        if (!p) { std::printf("createPlugin failed\n"); return 1; }
        auto* core = static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
        auto* build = static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
        auto* rt = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        std::printf("{\"plugin\": \"%s::%s\", \"outputs\": %d, \"core\": \"%s\", \"build\": \"%s\", \"runtime\": \"%s\"}\n",
            core->getPluginNamespace(), core->getPluginName(), build->getNbOutputs(), core->getInterfaceInfo().kind,
            build->getInterfaceInfo().kind, rt->getInterfaceInfo().kind);
        PluginFieldCollection const* ser = rt->getFieldsToSerialize();
        dump(("ser_" + name).c_str(), ser);
        IPluginV3* q = c->createPlugin("node", ser, TensorRTPhase::kRUNTIME);
        IPluginV3* r = q ? q->clone() : nullptr;
        if (!r) { std::printf("re-create failed\n"); return 1; }
        dump(("reser_" + name).c_str(),
            static_cast<IPluginV3OneRuntime*>(r->getCapabilityInterface(PluginCapabilityType::kRUNTIME))->getFieldsToSerialize());
        // supportsFormatCombination for x (pos 0) in each type/format
        DataType const types[] = {DataType::kFLOAT, DataType::kHALF};
        TensorFormat const formats[] = {TensorFormat::kLINEAR, TensorFormat::kHWC, TensorFormat::kHWC8};
        std::printf("{\"tag\": \"formats_%s\", \"ok\": [", name.c_str());
        bool first = true;
        for (DataType t : types)
            for (TensorFormat f : formats)
            {
                DynamicPluginTensorDesc io[4]{};
                for (auto& d : io) { d.desc.type = t; d.desc.format = TensorFormat::kLINEAR; }
                io[0].desc.dims.nbDims = 4;          // x: a block's kernels serve only their C
                io[0].desc.dims.d[0] = 1; io[0].desc.dims.d[1] = channels; io[0].desc.dims.d[2] = io[0].desc.dims.d[3] = 8;
                io[0].desc.format = f;
                io[3].desc.format = f;
                bool ok = build->supportsFormatCombination(0, io, 3, 1) && build->supportsFormatCombination(1, io, 3, 1)
                    && build->supportsFormatCombination(2, io, 3, 1) && build->supportsFormatCombination(3, io, 3, 1);
                char const* fname = f == TensorFormat::kLINEAR ? "LINEAR" : f == TensorFormat::kHWC ? "HWC" : "HWC8";
                if (ok) { std::printf("%s\"%s/%s\"", first ? "" : ", ", t == DataType::kFLOAT ? "float32" : "float16", fname); first = false; }
            }
        std::printf("]}\n");
        // a bad field is refused
        char const bad[] = "gelu";
        fields[3] = PluginField{"act", bad, PluginFieldType::kCHAR, 4};
        std::printf("{\"tag\": \"bad_act_%s\", \"refused\": %s}\n", name.c_str(),
            c->createPlugin("node", &fc, TensorRTPhase::kBUILD) == nullptr ? "true" : "false");
        delete p; delete q; delete r;
    }
    return 0;
}
"""


def test_fields_round_trip_through_the_creators(plugin_so, tmp_path):
    so, stub, include = plugin_so
    src = tmp_path / "harness.cpp"
    src.write_text(HARNESS)
    exe = tmp_path / "harness"
    result = subprocess.run(["nvcc", "-std=c++17", "-I" + include, str(src), "-o", str(exe), "-ldl"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    env = dict(os.environ)
    if stub:
        env["LD_LIBRARY_PATH"] = f"{stub}:{env.get('LD_LIBRARY_PATH', '')}"
    run = subprocess.run([str(exe), str(so)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    out = [json.loads(line) for line in run.stdout.splitlines()]
    by_tag = {o["tag"]: o for o in out if "tag" in o}
    creators = [o for o in out if "creator" in o]
    ops = ("dw", "pw", "dwpw", "ir")
    assert [(c["creator"], c["version"], c["interface"]) for c in creators] == \
        [(f"autotune::{op}_conv2d", "1", "PLUGIN CREATOR_V3ONE") for op in ops]
    plugins = [o for o in out if "plugin" in o]
    assert [(p["plugin"], p["outputs"], p["core"], p["build"], p["runtime"]) for p in plugins] == [
        (f"autotune::{op}_conv2d", 1, "PLUGIN_V3ONE_CORE", "PLUGIN_V3ONE_BUILD", "PLUGIN_V3ONE_RUNTIME")
        for op in ops]
    base = ["kernel", "stride", "padding", "act", "layout"]
    assert list(by_tag["names_dw_conv2d"]["fields"]) == base
    assert list(by_tag["names_pw_conv2d"]["fields"]) == base + ["C_out"]
    assert list(by_tag["names_dwpw_conv2d"]["fields"]) == base + ["C_out", "act2"]
    assert list(by_tag["names_ir_conv2d"]["fields"]) == base + ["C_out", "act2", "expansion"]
    want = {
        "dw": dict(kernel=3, stride=1, padding=1, act="relu6", layout="nchw"),
        "pw": dict(kernel=1, stride=1, padding=0, act="relu6", layout="nchw", C_out=20),
        "dwpw": dict(kernel=3, stride=2, padding=1, act="relu", layout="nchw", C_out=16, act2="relu"),
        "ir": dict(kernel=3, stride=1, padding=1, act="relu6", layout="nchw", C_out=12, act2="none", expansion=4),
    }
    for op, fields in want.items():
        assert by_tag[f"ser_{op}_conv2d"]["fields"] == by_tag[f"reser_{op}_conv2d"]["fields"] == fields, op
    # formats offered = those with a tuned variant of that kind (test DB: dw k3 s1 p1 relu6 and pw relu6
    # only as fp16 NHWC -> HWC8; the ir block as fp16 NHWC; the dwpw block as fp32 NCHW -> LINEAR)
    assert by_tag["formats_dw_conv2d"]["ok"] == ["float16/HWC8"]
    assert by_tag["formats_pw_conv2d"]["ok"] == ["float16/HWC8"]
    assert by_tag["formats_ir_conv2d"]["ok"] == ["float16/HWC8"]
    assert by_tag["formats_dwpw_conv2d"]["ok"] == ["float32/LINEAR"]
    assert all(by_tag[f"bad_act_{op}_conv2d"]["refused"] for op in ops)


# ---- the command line ------------------------------------------------------------------------------
def test_cli_writes_cpp_unless_told_not_to(capsys, db, tmp_path):  # noqa: F811
    from autotune import cli
    path, _, _ = db
    assert cli.main(["export-trt", "--db", str(path), "--gpu", "all", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "autotune_plugins.py" in out and str(tmp_path / "a" / "cpp") in out
    assert (tmp_path / "a" / "cpp" / "autotune_plugins.cpp").is_file()
    assert cli.main(["export-trt", "--db", str(path), "--gpu", "all", "--out", str(tmp_path / "b"), "--no-cpp"]) == 0
    assert (tmp_path / "b" / "autotune_plugins.py").is_file() and not (tmp_path / "b" / "cpp").exists()


# ---- (d) TensorRT's lean runtime: its plugin registry loads the library --------------------------------
LEAN_SCRIPT = r"""
import json, sys
import numpy as np
try:
    import tensorrt_lean as trt
except ImportError:
    import tensorrt_lean_bindings as trt
SPECS = {   # each op's fields as onnx-fuse writes them
    "dw_conv2d": dict(kernel=3, stride=1, padding=1, act="relu6", layout="nchw"),
    "pw_conv2d": dict(kernel=1, stride=1, padding=0, act="relu6", layout="nchw", C_out=20),
    "dwpw_conv2d": dict(kernel=3, stride=2, padding=1, act="relu", layout="nchw", C_out=16, act2="relu"),
    "ir_conv2d": dict(kernel=3, stride=1, padding=1, act="relu6", layout="nchw", C_out=12, act2="none", expansion=4),
}

def collection(fields):
    out = []
    for k, v in fields.items():
        if isinstance(v, str):
            out.append(trt.PluginField(k, np.frombuffer(v.encode() + b"\0", dtype=np.int8), trt.PluginFieldType.CHAR))
        else:
            out.append(trt.PluginField(k, np.array([v], dtype=np.int32), trt.PluginFieldType.INT32))
    return trt.PluginFieldCollection(out)

registry = trt.get_plugin_registry()
registry.load_library(sys.argv[1])
result = {"creators": sorted(f"{c.plugin_namespace}::{c.name}" for c in registry.all_creators
                             if c.plugin_namespace == "autotune")}
for name, fields in SPECS.items():
    creator = registry.get_creator(name, "1", "autotune")
    built = creator.create_plugin("node", collection(fields), trt.TensorRTPhase.BUILD)
    # deserialization hands the creator the fields the plugin serialized: the same set (checked field by
    # field against getFieldsToSerialize by test_fields_round_trip_through_the_creators)
    loaded = creator.create_plugin("node", collection(fields), trt.TensorRTPhase.RUNTIME)
    try:
        refused = creator.create_plugin("node", collection(dict(fields, act="gelu")), trt.TensorRTPhase.BUILD) is None
    except Exception:
        refused = True
    result[name] = dict(built=built is not None, loaded=loaded is not None, bad_refused=refused)
print(json.dumps(result))
"""


def test_lean_runtime_registry_loads_the_library_and_creates_every_plugin(plugin_so, tmp_path):
    """TensorRT's lean runtime (PyPI: tensorrt-lean-cu13-libs and its bindings) loads the compiled library
    through its plugin registry, lists its four creators, and creates every plugin from a field
    collection in the build and the runtime (deserialization) phase; a bad field is refused."""
    import importlib.util
    if not any(importlib.util.find_spec(m) for m in ("tensorrt_lean", "tensorrt_lean_bindings")):
        pytest.skip("TensorRT's lean runtime is not installed (pip install tensorrt-lean-cu13-libs and its bindings)")
    so, stub, _ = plugin_so
    script = tmp_path / "lean.py"
    script.write_text(LEAN_SCRIPT)
    env = dict(os.environ)
    if stub:
        env["LD_LIBRARY_PATH"] = f"{stub}:{env.get('LD_LIBRARY_PATH', '')}"
    run = subprocess.run([sys.executable, str(script), str(so)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    ops = ("dw_conv2d", "pw_conv2d", "dwpw_conv2d", "ir_conv2d")
    assert result.pop("creators") == sorted(f"autotune::{op}" for op in ops)
    assert result == {op: dict(built=True, loaded=True, bad_refused=True) for op in ops}
