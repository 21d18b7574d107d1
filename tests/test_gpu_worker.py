"""A faulting or hanging kernel costs one trial, never the sweep."""
import pytest

from autotune import compiler
from autotune.kernels import depthwise
from autotune.problem import Problem
from autotune.workers import GpuWorker, WorkerLost

pytestmark = pytest.mark.gpu

PROBLEM = Problem("dw", 1, 8, 8, 8, k=3)
FAULT = r'''extern "C" __global__ void dw_conv2d(const float* x, const float* w, const float* b, float* y,
    int N, int C, int H, int W, int Co, int Ho, int Wo, int ldx, int ldy)
{ y[(size_t)1 << 40] = 1.0f; }'''
HANG = r'''extern "C" __global__ void dw_conv2d(const float* x, const float* w, const float* b, float* y,
    int N, int C, int H, int W, int Co, int Ho, int Wo, int ldx, int ldy)
{ while (clock64() >= 0) {} }'''   # clock64 is volatile: the loop cannot be optimised away


def _fields(code):
    from autotune.device import gpu_arch
    b = compiler.compile_code(code, gpu_arch())
    return {"arch": b.arch, "image": b.image, "registers": b.registers, "spill_bytes": b.spill_bytes,
            "shared_bytes": b.shared_bytes, "log": ""}


def _good_fields():
    from autotune import codegen
    fam = depthwise.NCHW
    return _fields(codegen.render(fam, PROBLEM, fam.default_config(PROBLEM)).code)


# A fault must be reported before the time-out: the worker's context teardown after an illegal address
# can take seconds while other processes share the GPU (pytest -n), so its limit is generous.
@pytest.mark.parametrize("code, reason, timeout_s", [(FAULT, "illegal|died|CUDA", 60), (HANG, "timed out", 10)])
def test_bad_kernel_loses_only_the_worker(code, reason, timeout_s):
    fam = depthwise.NCHW
    config = fam.default_config(PROBLEM)
    slow = 60       # the other requests' limit: under pytest -n a good measurement can take over 10 s
    with GpuWorker(timeout_s=timeout_s) as worker:
        worker.request("prepare", PROBLEM.to_dict(), 0)
        worker.request("upload", 0, timeout_s=slow)
        with pytest.raises(WorkerLost, match=reason):
            worker.request("measure", fam.name, config, _fields(code))
        # A fresh worker takes over and measures a good kernel.
        worker.request("prepare", PROBLEM.to_dict(), 0)
        worker.request("upload", 0, timeout_s=slow)
        record = worker.request("measure", fam.name, config, _good_fields(), timeout_s=slow)
        assert record["status"] == "ok" and record["time_us"] > 0
        assert worker.restarts == 1
