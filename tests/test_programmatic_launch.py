"""Programmatic dependent launch: the driver structures lookup fills in, and the rule that makes it safe
(every kernel waits for the previous kernel before it reads or writes global memory)."""
import ctypes
import pathlib
import re
import shutil
import subprocess

import pytest

from autotune import codegen, kernels
from autotune.problem import Problem

from autotune import driver_launch

SAMPLES = [
    Problem("dw", N=2, C=40, H=13, W=17, k=3, act="relu6", dtype="float16", layout="nhwc"),
    Problem("dw", N=2, C=40, H=13, W=17, k=5, stride=2, dtype="float32", layout="nchw"),
    Problem("pw", N=2, C=48, H=7, W=9, C_out=40, act="relu6", dtype="float16", layout="nhwc"),
    Problem("pw", N=2, C=48, H=7, W=9, C_out=40, dtype="float16", layout="nchw"),
    Problem("pw", N=2, C=48, H=7, W=9, C_out=40, dtype="float32", layout="nhwc", tf32=True),
    Problem("conv", N=2, C=3, H=19, W=21, C_out=32, k=3, stride=2, act="relu6", dtype="float16", layout="nhwc"),
    Problem("dwpw", N=2, C=48, H=14, W=14, C_out=24, k=3, act="relu6", dtype="float16", layout="nhwc"),
    Problem("ir", N=2, C=24, H=14, W=14, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc"),
    Problem("ir", N=1, C=16, H=9, W=11, C_out=24, k=3, stride=2, expansion=4, act="relu6", dtype="float32", layout="nchw"),
    Problem("pwdw", N=2, C=24, H=14, W=14, C_out=144, k=3, act="relu6", dtype="float16", layout="nhwc"),
]


def _kernel_body(code: str, entry: str) -> str:
    start = re.search(r'extern "C" __global__[^{]*\b' + entry + r'\(', code)
    assert start, f"no entry {entry}"
    return code[code.index("{", start.end()) + 1:]


def test_every_kernel_waits_for_the_previous_one_first():
    """With the launch attribute a kernel may start while its producer still runs: its first statement
    must be the wait, in every family (a new template without it would read stale inputs)."""
    seen = set()
    for problem in SAMPLES:
        for family in kernels.families_for(problem, "sm_90"):
            source = codegen.render(family, problem, family.default_config(problem))
            first = _kernel_body(source.code, family.entry).strip().split(";", 1)[0]
            assert first == "wait_for_previous_kernel()", f"{family.name}: kernel starts with {first!r}"
            seen.add(family.name)
    assert seen == {f.name for f in kernels.families()}, "a family is not covered by SAMPLES"


def test_the_wait_is_compiled_for_sm90_only():
    source = next(iter(codegen.render(f, SAMPLES[0], f.default_config(SAMPLES[0]))
                       for f in kernels.families_for(SAMPLES[0], "sm_90")))
    helper = source.code[source.code.index("void wait_for_previous_kernel()"):]
    helper = helper[:helper.index("\n}\n")]
    assert "#if __CUDA_ARCH__ >= 900" in helper and "griddepcontrol.wait" in helper
    trigger = source.code[source.code.index("void let_next_kernel_start()"):]
    assert "#if __CUDA_ARCH__ >= 900" in trigger[:trigger.index("\n}\n")]


def test_programmatic_launch_from_sm90_unless_turned_off(monkeypatch):
    monkeypatch.delenv("AUTOTUNE_PDL", raising=False)
    assert [driver_launch.programmatic_launch(a) for a in ("sm_80", "sm_86", "sm_90", "sm_90a", "sm_100")] == \
        [False, False, True, True, True]
    monkeypatch.setenv("AUTOTUNE_PDL", "0")
    assert not driver_launch.programmatic_launch("sm_90")


def _cuda_include() -> pathlib.Path | None:
    try:
        import nvidia.cu13
        candidates = [pathlib.Path(p) / "include" for p in nvidia.cu13.__path__]
    except ImportError:
        candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(pathlib.Path(nvcc).resolve().parent.parent / "include")
    return next((c for c in candidates if (c / "cuda.h").exists()), None)


def test_launch_structures_match_cuda_h(tmp_path):
    """The ctypes mirrors of CUlaunchConfig and CUlaunchAttribute against the header's own layout."""
    include, cc = _cuda_include(), shutil.which("cc") or shutil.which("gcc")
    if include is None or cc is None:
        pytest.skip("cuda.h or a C compiler not found")
    probe = tmp_path / "layout.c"
    probe.write_text("""#include <stdio.h>
#include <stddef.h>
#include <cuda.h>
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu %zu %d\\n", sizeof(CUlaunchAttribute), offsetof(CUlaunchAttribute, value),
           sizeof(CUlaunchConfig), offsetof(CUlaunchConfig, sharedMemBytes), offsetof(CUlaunchConfig, hStream),
           offsetof(CUlaunchConfig, attrs), offsetof(CUlaunchConfig, numAttrs),
           (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
    return 0;
}
""")
    subprocess.run([cc, str(probe), "-I", str(include), "-o", str(tmp_path / "layout")], check=True)
    header = [int(v) for v in subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True,
                                              check=True).stdout.split()]
    attr, config = driver_launch.LaunchAttribute, driver_launch.LaunchConfig
    assert header == [ctypes.sizeof(attr), attr.value.offset, ctypes.sizeof(config), config.shared_mem.offset,
                      config.stream.offset, config.attrs.offset, config.num_attrs.offset,
                      driver_launch.PROGRAMMATIC_STREAM_SERIALIZATION]


@pytest.mark.gpu
def test_runner_times_kernels_launched_as_lookup_launches_them(arch):
    """The runner's programmatic launches (how sweeps time kernels on sm_90) compute what plain ones do,
    and measure() takes that mode exactly where lookup launches so."""
    import cupy as cp
    from autotune import compiler, runner
    from autotune.reference import compare
    p = SAMPLES[0]
    family = kernels.families_for(p, arch)[0]
    config = family.default_config(p)
    fn = runner.load_function(compiler.compile_code(codegen.render(family, p, config).code, arch), family.entry)
    data = runner.ProblemData.create(p, seed=3)
    launch = family.launch(p, config)
    x, w, b, y = data.sets[0]
    for programmatic in (False, True):
        y.fill(cp.nan)
        runner.launch(fn, launch, x, w, b, y, p, programmatic=programmatic)
        cp.cuda.get_current_stream().synchronize()
        ok, err = compare(y, data.ref, p.tolerance)
        assert ok, f"programmatic={programmatic}: worst error / tolerance {err}"
        assert runner.time_kernel(fn, launch, data, programmatic=programmatic) > 0
    assert driver_launch.programmatic_launch(arch) == (kernels.sm_version(arch) >= 90)


def test_argument_pointers_address_each_kernel_parameter():
    args = driver_launch.KernelArgs(1, 2, 3, 4, *range(9), 5)
    ptrs = driver_launch.arg_pointers(args)
    base = ctypes.addressof(args)
    assert len(ptrs) == 14 and ptrs[0] == base and ptrs[3] == base + 24 and ptrs[4] == base + 32
    assert ptrs[12] == base + 32 + 8 * 4 and ptrs[13] == base + driver_launch.KernelArgs.residual.offset
    assert ctypes.c_int32.from_address(ptrs[6]).value == 2 and ctypes.c_uint64.from_address(ptrs[13]).value == 5
