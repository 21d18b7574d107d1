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
    """Bytes per second of a device-to-device copy, counting bytes read plus bytes written."""
    cp = cupy()
    src = cp.ones(BANDWIDTH_BYTES // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    # The faster of the copy engine's path and a copy kernel: the ceiling we hold kernels to.
    memcpy_us = time_graph(lambda i, stream: cp.cuda.runtime.memcpyAsync(
        dst.data.ptr, src.data.ptr, BANDWIDTH_BYTES, cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr), 1)
    kernel_us = time_graph(lambda i, stream: dst.__setitem__(Ellipsis, src), 1)
    return 2 * BANDWIDTH_BYTES / (min(memcpy_us, kernel_us) * 1e-6)
