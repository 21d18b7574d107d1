"""Kernel families: for each, its tunable parameters, constraints, template and launch geometry.

Every family module defines `FAMILIES`, a list of objects with this interface:

    name: str                      family name, e.g. "depthwise"
    template: str                  file under templates/, e.g. "depthwise.cu.j2"
    entry: str                     the extern "C" kernel name in the rendered source
    applies(problem) -> bool       whether the family can run this problem at all
    space(problem) -> dict         parameter name -> tuple of candidate values
    check(problem, config) -> str | None
                                   why a configuration is invalid (shared memory, registers,
                                   divisibility, ...), or None; runs before anything is compiled
    default_config(problem) -> dict
                                   a safe configuration that passes check() for every problem
    template_params(problem, config) -> dict
                                   compile-time constants handed to the Jinja template
    launch(problem, config) -> Launch
                                   grid/block/dynamic shared memory; written with +, *, // only on
                                   the problem's sizes so that symbolic sizes can flow through it
    residual_epilogue: bool        (optional, default False) the template can add a 14th argument,
                                   laid out like y, to its output (codegen.render's add_residual)
    exact_channels: bool           (optional, default False) compiled for the problem's C and C_out:
                                   an exporter's kernel serves only those (lookup recompiles for
                                   each shape anyway)
    min_sm: int                    (optional) the oldest arch it compiles for, e.g. 90; families_for()
                                   leaves it out for older targets
    max_sm: int                    (optional) the newest: arch-specific instructions (wgmma, sm_90a)
    divisors(problem, config) -> dict
                                   runtime sizes ("C", "C_out", "W", "W_out", "HW") the compiled
                                   kernel needs divisible by a modulus: what reusing it for another
                                   shape of the same kind must check (a fused block's kernel is
                                   compiled for its channel counts and serves no other)

All kernels share one signature, so runners and exporters need not know the family:

    entry(const T* x, const T* w, const T* bias, T* y,
          int N, int C, int H, int W, int C_out, int H_out, int W_out, int ldx, int ldy)

(Kernels rendered with add_residual take `const T* residual` after ldy.)
x, y are activations in the problem's layout; w uses PyTorch's layout; bias may be null when the
problem has none. ldx / ldy are the element strides between neighbouring pixels in NHWC (C and C_out
unless the channels are padded, as TensorRT's HWC8 does); NCHW kernels ignore them.
"""
from __future__ import annotations

from dataclasses import dataclass

# Hardware limits the constraints check against (every arch we target: sm_80 and newer).
MAX_THREADS_PER_BLOCK = 1024
MAX_SHARED_BYTES = 48 * 1024          # without an opt-in attribute
MAX_DYNAMIC_SHARED_BYTES_SM90 = 227 * 1024   # with it (cudaFuncAttributeMaxDynamicSharedMemorySize), sm_90
REGISTERS_PER_SM = 65536
MAX_SHARED_PER_SM = 164 * 1024        # sm_80 (sm_90: 228 KB): what resident blocks share
MAX_REGISTERS_PER_THREAD = 255


@dataclass(frozen=True)
class Launch:
    grid: tuple
    block: tuple
    shared_mem: int = 0

    @property
    def threads(self):
        return self.block[0] * self.block[1] * self.block[2]


def ceil_div(a, b):
    return (a + b - 1) // b


def resource_violation(threads: int, shared_bytes: int, registers: int, min_threads: int = 1,
                       max_shared: int = MAX_SHARED_BYTES) -> str | None:
    """Why a block of this size cannot launch on any arch we target, or None. Registers are
    allocated 8 per thread at a time. max_shared: more only for families that opt in to it."""
    if not min_threads <= threads <= MAX_THREADS_PER_BLOCK:
        return f"{threads} threads per block (need {min_threads}..{MAX_THREADS_PER_BLOCK})"
    if shared_bytes > max_shared:
        return f"{shared_bytes} bytes of shared memory > {max_shared}"
    if registers > MAX_REGISTERS_PER_THREAD:
        return f"~{registers} registers per thread > {MAX_REGISTERS_PER_THREAD}"
    if ceil_div(registers, 8) * 8 * threads > REGISTERS_PER_SM:
        return f"~{registers} registers x {threads} threads > {REGISTERS_PER_SM} per SM (block cannot launch)"
    return None


def clustered(launch: Launch, cluster_k: int) -> Launch:
    """`launch` with each block replaced by a cluster of cluster_k blocks, consecutive along x (the
    templates' __cluster_dims__(CLUSTER_K, 1, 1)): they share one tile and split its reduction."""
    return Launch(grid=(launch.grid[0] * cluster_k, *launch.grid[1:]), block=launch.block,
                  shared_mem=launch.shared_mem)


def idle_in_cluster(units: int, cluster_k: int) -> bool:
    """Whether splitting `units` (K slices, hidden chunks) into contiguous shares over a cluster's
    blocks, as the templates do, leaves a block without any."""
    share = ceil_div(units, cluster_k)
    return ceil_div(units, share) < cluster_k


def tile_grid(p, tile_h: int, tile_w: int, ch_per_block: int, channels=None) -> tuple:
    """The grid the depthwise, conv and fused templates decode: x = output tiles (row-major), y = blocks
    of ch_per_block channels (of `channels`, default C), z = images. Only +, *, // on the problem's sizes
    (they may be symbolic in an exporter)."""
    h_out = (p.H + 2 * p.padding - p.k) // p.stride + 1
    w_out = (p.W + 2 * p.padding - p.k) // p.stride + 1
    channels = p.C if channels is None else channels
    return (ceil_div(w_out, tile_w) * ceil_div(h_out, tile_h), ceil_div(channels, ch_per_block), p.N)


def sm_version(arch: str) -> int:
    """90 for "sm_90", "sm_90a" or "compute_90"."""
    return int(arch.split("_")[-1].rstrip("a"))


def scalar_args(problem, ldx=None, ldy=None) -> tuple:
    """The int32 arguments after the four pointers, in kernel-signature order."""
    p = problem
    return (p.N, p.C, p.H, p.W, p.C_out, p.H_out, p.W_out,
            p.C if ldx is None else ldx, p.C_out if ldy is None else ldy)


def families():
    from . import conv, depthwise, fused, pointwise
    return [*depthwise.FAMILIES, *pointwise.FAMILIES, *conv.FAMILIES, *fused.FAMILIES]


def supports(family, arch: str) -> bool:
    """Whether `arch` ("sm_90", "compute_90") runs the family (its `min_sm`, when it has one:
    thread-block clusters need sm_90; its `max_sm`: wgmma is sm_90's alone)."""
    return getattr(family, "min_sm", 0) <= sm_version(arch) <= getattr(family, "max_sm", 10 ** 9)


def families_for(problem, arch: str | None = None):
    """The families that run `problem`; with an arch, only those it supports."""
    return [f for f in families() if f.applies(problem) and (arch is None or supports(f, arch))]


def runnable(problems) -> tuple[list, list]:
    """(problems our kernels run, problems they do not: PyTorch keeps those). A block runs when a family
    runs it whole or, failing that, one runs each of its convolutions (its depth-1 plan)."""
    fit, unfit = [], []
    for p in problems:
        (fit if families_for(p) or all(families_for(s) for s in p.stages()) else unfit).append(p)
    return fit, unfit


def family_named(name: str):
    for f in families():
        if f.name == name:
            return f
    raise KeyError(f"no kernel family named {name!r}")
