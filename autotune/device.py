"""The GPU: identity, limits and measured copy bandwidth (needs CuPy and a GPU)."""
from __future__ import annotations

from .runner import cupy, time_graph

BANDWIDTH_BYTES = 1 << 30      # 1 GiB copied: far beyond any L2


def gpu_arch(device_id: int = 0) -> str:
    return f"sm_{cupy().cuda.Device(device_id).compute_capability}"   # CuPy gives e.g. "90"


def describe(device_id: int = 0) -> dict:
    cp = cupy()
    props = cp.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return {
        "name": name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "arch": f"sm_{props['major']}{props['minor']}",
        "sm_count": props["multiProcessorCount"],
        "l2_bytes": props["l2CacheSize"],
        "memory_bytes": props["totalGlobalMem"],
        "copy_bandwidth": copy_bandwidth(),
    }


def copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy, counting bytes read plus bytes written: the fastest of
    the copy engine's path, CuPy's copy kernel and ours (templates/copy_floor.cu.j2, 16-byte accesses,
    launched like our kernels). On an H100 ours moves about a quarter more than the other two: without
    it, the memory floor was not a floor (kernels ran at 1.04-1.19 of it)."""
    cp = cupy()
    src = cp.ones(BANDWIDTH_BYTES // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    memcpy_us = time_graph(lambda i, stream: cp.cuda.runtime.memcpyAsync(
        dst.data.ptr, src.data.ptr, BANDWIDTH_BYTES, cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr), 1)
    cupy_us = time_graph(lambda i, stream: dst.__setitem__(Ellipsis, src), 1)
    return 2 * BANDWIDTH_BYTES / (min(memcpy_us, cupy_us, _copy_floor_us(src, dst)) * 1e-6)


def _copy_floor_us(src, dst) -> float:
    """Our copy kernel moving src (float32, BANDWIDTH_BYTES) to dst, as the x and y of a 1x1 problem."""
    from . import codegen, compiler
    from .kernels.copy import COPY_FLOOR
    from .problem import Problem
    from .driver_launch import programmatic_launch
    from .runner import launch, load_function
    cp = cupy()
    side = 2048                                   # 1 x 2048 x 2048 pixels of 64 float32 channels: 1 GiB
    problem = Problem(op="pw", N=1, C=64, H=side, W=side, C_out=64, act="none", bias=False, dtype="float32",
                      layout="nhwc")
    assert problem.N * problem.C * problem.H * problem.W * 4 == BANDWIDTH_BYTES == src.nbytes
    w = cp.zeros(problem.weight_shape, dtype=cp.float32)
    arch = gpu_arch(cp.cuda.Device().id)
    fn = load_function(compiler.compile_code(codegen.render(COPY_FLOOR, problem, {}).code, arch), COPY_FLOOR.entry)
    cfg, pdl = COPY_FLOOR.launch(problem, {}), programmatic_launch(arch)
    return time_graph(lambda i, stream: launch(fn, cfg, src, w, None, dst, problem, stream=stream, programmatic=pdl), 1)
