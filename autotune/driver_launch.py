"""Kernel launches through the CUDA driver, as lookup makes them and as the runner times them: the
parameter block of the kernels' one signature, and cuLaunchKernelEx with programmatic dependent launch
(PDL) on sm_90 and later, which CuPy does not wrap."""
from __future__ import annotations

import ctypes
import os

from . import kernels


class KernelArgs(ctypes.Structure):
    """The kernel's parameters for cuLaunchKernel: four pointers, the int32 sizes, then the residual (read
    only by kernels rendered with add_residual: the driver takes as many parameters as the kernel has)."""
    _fields_ = [("x", ctypes.c_uint64), ("w", ctypes.c_uint64), ("bias", ctypes.c_uint64), ("y", ctypes.c_uint64)] + \
               [(f"s{i}", ctypes.c_int32) for i in range(9)] + \
               [("residual", ctypes.c_uint64)]     # after N C H W C_out H_out W_out ldx ldy


class LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute (cuda.h): an id, then a 64-byte value union of which one int is used here."""
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int), ("rest", ctypes.c_char * 60)]


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig (cuda.h): grid, block, dynamic shared memory, stream and launch attributes."""
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_mem", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.c_void_p), ("num_attrs", ctypes.c_uint)]


def arg_pointers(kernel_args: KernelArgs):
    """The void* array cuLaunchKernel(Ex) takes: the address of each of kernel_args' fields."""
    base = ctypes.addressof(kernel_args)
    return (ctypes.c_void_p * len(KernelArgs._fields_))(
        *(base + getattr(KernelArgs, name).offset for name, _ in KernelArgs._fields_))


PROGRAMMATIC_STREAM_SERIALIZATION = 6        # CUlaunchAttributeID
PDL_ATTRIBUTE = LaunchAttribute(PROGRAMMATIC_STREAM_SERIALIZATION, b"", 1)


def programmatic_launch(arch: str) -> bool:
    """Whether kernels for `arch` start with programmatic dependent launch: sm_90 and later, unless
    AUTOTUNE_PDL=0. Every template waits for the previous kernel's writes before touching memory
    (wait_for_previous_kernel in common.cuh), so only launch latency overlaps the kernel before."""
    return kernels.sm_version(arch) >= 90 and os.environ.get("AUTOTUNE_PDL", "1") != "0"


def launch_programmatic(fn, launch: kernels.Launch, args: tuple, stream: int):
    """One launch of `fn` with programmatic dependent launch, as TunedKernel makes them: args are the
    kernel's parameters (four pointers, the nine sizes, and the residual pointer or nothing). The
    runner times tuned kernels this way where lookup launches them so."""
    kernel_args = KernelArgs(*args[:13], args[13] if len(args) > 13 else 0)
    arg_ptrs = arg_pointers(kernel_args)
    config = LaunchConfig(launch.grid, launch.block, launch.shared_mem, stream, ctypes.addressof(PDL_ATTRIBUTE), 1)
    status = cupy_parts().launch_ex(ctypes.byref(config), ctypes.c_void_p(fn.ptr), arg_ptrs, None)
    if status:
        raise RuntimeError(f"cuLaunchKernelEx failed: CUresult {status}")


class CupyParts:
    """The pieces of CuPy (and the driver) a call uses, found once: an import on every call costs host time."""

    def __init__(self):
        import cupy
        from cupy_backends.cuda.api import driver
        self.ndarray, self.driver, self.get_current_stream = cupy.ndarray, driver, cupy.cuda.get_current_stream
        self._launch_ex = None

    @property
    def launch_ex(self):
        """cuLaunchKernelEx, which CuPy does not wrap (the driver library is there once a kernel runs).
        It takes its four arguments as ctypes objects (or None): without declared argument types a
        call converts nothing, which halves its cost in Python; a plain int would be passed as 32 bits."""
        if self._launch_ex is None:
            fn = ctypes.CDLL("libcuda.so.1").cuLaunchKernelEx
            fn.restype = ctypes.c_int
            self._launch_ex = fn
        return self._launch_ex


_CUPY = None


def cupy_parts() -> CupyParts:
    global _CUPY
    if _CUPY is None:
        _CUPY = CupyParts()
    return _CUPY
