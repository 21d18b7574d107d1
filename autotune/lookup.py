"""Lookup at inference: the tuned kernel for a problem on this GPU, as a callable.

    import autotune
    conv = autotune.lookup(op="dw", N=1, C=32, H=112, W=112, k=3, act="relu6", dtype="float16", layout="nhwc")
    y = conv(x, w, bias)            # CuPy arrays, torch tensors, anything with __cuda_array_interface__

A fused block (dwpw, ir) runs as the plan that measured fastest on this GPU: one fused kernel, or
its stages one kernel each (plans.py). An untuned shape falls back, in order: the nearest tuned shape on the same GPU, the same shape or
nearest on another GPU of the same compute capability, then the family's safe default; the kernel's
`fallback` says which, and a warning says it once.
"""
from __future__ import annotations

import ctypes
import sys
import threading
import warnings

from . import codegen, compiler, kernels, plans
from .driver_launch import KernelArgs, LaunchConfig, PDL_ATTRIBUTE, arg_pointers, cupy_parts, programmatic_launch
from .problem import Problem, shape_distance
from .store import OK, Store, gpu_id

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()
_SAME_KIND = ("op", "k", "stride", "padding", "bias", "act", "dtype", "layout", "act2", "expansion")
_BLOCK_DEFAULTS = {"act2": "none", "expansion": 1}    # rows of databases from before fused blocks


class TunedKernel:
    """Runs one problem's chosen kernel on the current stream. Compiled once, then cached.

    Calls go straight to the driver (cuLaunchKernel, or cuLaunchKernelEx for programmatic dependent
    launch) with a parameter block prepared once, which keeps the host overhead of a call to a few
    microseconds."""

    def __init__(self, problem: Problem, family, config: dict, arch: str, fallback: str, add_residual: bool = False):
        self.problem, self.family, self.config, self.fallback = problem, family, config, fallback
        self.arch, self.add_residual = arch, add_residual      # add_residual: y += the `residual` argument
        self.launch = family.launch(problem, config)
        self._args = KernelArgs(0, 0, 0, 0, *kernels.scalar_args(problem), 0)
        self._arg_ptrs = arg_pointers(self._args)
        self._fn = None
        p = problem
        # Accepted shapes of x and y, each with the element strides that store it in the problem's
        # layout (NHWC data may also come as an NCHW-shaped channels_last tensor, as torch keeps it).
        self._x_layouts = _layouts(p.layout, p.N, p.C, p.H, p.W)
        self._y_layouts = _layouts(p.layout, p.N, p.C_out, p.H_out, p.W_out)
        self._x_bytes, self._y_bytes = ({shape: tuple(s * p.itemsize for s in strides) for shape, strides in d.items()}
                                        for d in (self._x_layouts, self._y_layouts))
        self._grid, self._block = self.launch.grid, self.launch.block
        self.pdl = programmatic_launch(arch)
        self._config = LaunchConfig(self._grid, self._block, self.launch.shared_mem, None,
                                     ctypes.addressof(PDL_ATTRIBUTE), 1)

    def __repr__(self):
        return f"TunedKernel({self.problem.key!r}, {self.family.name}, {self.config}, fallback={self.fallback!r})"

    def _function(self):
        if self._fn is None:
            from .runner import allow_dynamic_shared, load_function
            source = codegen.render(self.family, self.problem, self.config, add_residual=self.add_residual)
            self._fn = load_function(compiler.compile_code(source.code, self.arch), self.family.entry)
            allow_dynamic_shared(self._fn, self.launch.shared_mem)
            # cuLaunchKernelEx's arguments as ctypes objects, made once: only the stream changes, in place
            self._launch_ex_args = (ctypes.byref(self._config), ctypes.c_void_p(self._fn.ptr), self._arg_ptrs, None)
            self._launch_ex = cupy_parts().launch_ex
        return self._fn

    def _check(self, name: str, a, layouts: dict, shape: tuple):
        strides = layouts.get(tuple(a.shape))
        if strides is None:
            raise ValueError(f"{name}: shape {tuple(a.shape)} does not match {shape} of {self.problem.key}")
        if not _stored_at(a, strides, self.problem.itemsize):
            raise ValueError(f"{name}: not densely stored in {self.problem.layout.upper()} order")

    def __call__(self, x, w, bias=None, out=None, residual=None):
        # The common case - CuPy arrays, or torch tensors, at exactly the strides of the problem's
        # layout - costs a dict lookup per activation; anything else gets the general checks and their
        # errors. Calls on tiny tensors are dominated by this host time, so it is kept lean.
        parts = cupy_parts()
        ndarray = parts.ndarray
        if type(x) is ndarray:
            torch_like, dense = False, x.strides == self._x_bytes.get(x.shape)
        else:
            torch_like = hasattr(x, "data_ptr")
            dense = torch_like and x.stride() == self._x_layouts.get(x.shape)
        if not dense:
            self._check("x", x, self._x_layouts, self.problem.input_shape)
        if out is not None:
            if torch_like and type(out) is type(x):
                dense = out.stride() == self._y_layouts.get(out.shape)
            else:
                dense = _dense(out, ndarray, self._y_bytes, self._y_layouts)
            if not dense:
                self._check("out", out, self._y_layouts, self.problem.output_shape)
        if (residual is None) == self.add_residual:
            raise ValueError("residual: this kernel " + ("adds one: pass it" if self.add_residual else "adds none"))
        if residual is not None:
            if not _dense(residual, ndarray, self._y_bytes, self._y_layouts):
                self._check("residual", residual, self._y_layouts, self.problem.output_shape)
            self._args.residual = _pointer(residual, ndarray)
        if bias is None and self.problem.bias:
            raise ValueError(f"bias: {self.problem.key} needs a bias of shape ({self.problem.C_out},)")
        if torch_like:
            device = x.get_device()
            if device < 0:
                raise ValueError("x: a CPU tensor; the kernel needs it on the GPU")
            stream = _torch_stream(device)
        else:
            stream = parts.get_current_stream().ptr
        if out is None:
            out = _empty_like_output(x, self.problem, torch_like)
        fn = self._fn or self._function()
        a = self._args
        try:        # all torch tensors, or all CuPy arrays: their pointers without the general lookup
            if torch_like:
                a.x, a.y, a.w = x.data_ptr(), out.data_ptr(), w.data_ptr()
                a.bias = bias.data_ptr() if bias is not None else 0
            else:
                a.x, a.y, a.w = x.data.ptr, out.data.ptr, w.data.ptr
                a.bias = bias.data.ptr if bias is not None else 0
        except AttributeError:          # a mix, or other kinds of GPU arrays
            a.x, a.y, a.w = _pointer(x, ndarray), _pointer(out, ndarray), _pointer(w, ndarray)
            a.bias = _pointer(bias, ndarray) if bias is not None else 0
        if self.pdl:
            self._config.stream = stream
            status = self._launch_ex(*self._launch_ex_args)
            if status:
                raise RuntimeError(f"cuLaunchKernelEx failed for {self.problem.key}: CUresult {status}")
        else:
            (gx, gy, gz), (bx, by, bz) = self._grid, self._block
            parts.driver.launchKernel(fn.ptr, gx, gy, gz, bx, by, bz, self.launch.shared_mem,
                                      stream, ctypes.addressof(self._arg_ptrs), 0)
        return out


def _dense(a, ndarray, byte_strides: dict, element_strides: dict) -> bool:
    """Whether a CuPy array or a torch tensor lies at exactly the strides of the problem's layout."""
    if type(a) is ndarray:
        return a.strides == byte_strides.get(a.shape)
    return hasattr(a, "stride") and a.stride() == element_strides.get(a.shape)


def _c_strides(shape) -> tuple:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def _layouts(layout: str, n: int, c: int, h: int, w: int) -> dict:
    """{shape: element strides} of an activation stored densely in `layout`."""
    if layout == "nchw":
        return {(n, c, h, w): _c_strides((n, c, h, w))}
    # NHWC as such, and as an NCHW-shaped channels_last view unless both shapes are the same (C == H == W)
    out = {(n, c, h, w): (h * w * c, 1, w * c, c)}
    out[(n, h, w, c)] = _c_strides((n, h, w, c))
    return out


def _stored_at(a, strides: tuple, itemsize: int) -> bool:
    """Whether the array's elements lie at these element strides (dimensions of size 1 may carry any)."""
    if type(a) is cupy_parts().ndarray:                   # byte strides (the exact match was tried by the caller)
        actual = tuple(s // itemsize for s in a.strides)
    elif hasattr(a, "stride"):                       # torch: element strides
        actual = tuple(a.stride())
        if actual == strides:
            return True
    else:
        interface = getattr(a, "__cuda_array_interface__", None)
        if interface is None:
            return True                              # DLPack only: nothing to check here
        given = interface.get("strides")             # None: C-contiguous, by the interface's convention
        actual = _c_strides(a.shape) if given is None else tuple(s // itemsize for s in given)
    return all(x == s for x, s, n in zip(actual, strides, a.shape) if n > 1)


def _pointer(a, ndarray) -> int:
    if type(a) is ndarray:
        return a.data.ptr
    data_ptr = getattr(a, "data_ptr", None)         # torch
    if data_ptr is not None:
        return data_ptr()
    data = getattr(a, "data", None)
    if data is not None and hasattr(data, "ptr"):   # cupy
        return data.ptr
    if hasattr(a, "__cuda_array_interface__"):
        return a.__cuda_array_interface__["data"][0]
    if hasattr(a, "__dlpack__"):
        import cupy
        return cupy.from_dlpack(a).data.ptr
    raise TypeError(f"{type(a).__name__} is not a GPU array (no __cuda_array_interface__ or DLPack)")


def _empty_like_output(x, p: Problem, torch_like: bool):
    if torch_like:
        import torch
        if tuple(x.shape) == (p.N, p.C, p.H, p.W) and p.layout == "nhwc":   # channels_last tensor
            return torch.empty((p.N, p.C_out, p.H_out, p.W_out), dtype=x.dtype, device=x.device,
                               memory_format=torch.channels_last)
        return torch.empty(p.output_shape, dtype=x.dtype, device=x.device)
    import cupy
    return cupy.empty(p.output_shape, dtype=p.dtype)


_TORCH_RAW_STREAM = None


def _torch_stream(device: int) -> int:
    """The raw handle of torch's current stream on a device (torch is loaded: the caller holds a tensor)."""
    global _TORCH_RAW_STREAM
    if _TORCH_RAW_STREAM is None:
        _TORCH_RAW_STREAM = sys.modules["torch"]._C._cuda_getCurrentRawStream
    return _TORCH_RAW_STREAM(device)


def current_gpu(device_id: int | None = None) -> dict:
    import cupy
    dev = cupy.cuda.Device(device_id) if device_id is not None else cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
            "arch": f"sm_{props['major']}{props['minor']}"}


def choose(problem: Problem, store: Store | None, gpu: dict):
    """(family, config, fallback description) for this problem on this GPU."""
    families = {f.name: f for f in kernels.families_for(problem, gpu["arch"])}
    if not families:
        raise ValueError(f"no kernel family runs {problem.key}")
    if store is not None:
        gid = gpu_id(gpu)
        rows = [r for r in store.best_rows() if r["family"] in families
                and all(_field(r, f) == getattr(problem, f) for f in _SAME_KIND)
                and _usable(families[r["family"]], problem, r["config"])]
        tiers = [("exact", lambda r: r["gpu"] == gid and r["problem"] == problem.key),
                 ("nearest tuned shape on this GPU", lambda r: r["gpu"] == gid),
                 ("same compute capability", lambda r: r["compute_capability"] == gpu["compute_capability"])]
        for label, keep in tiers:
            candidates = [r for r in rows if keep(r)]
            if candidates:
                r = min(candidates, key=lambda r: (shape_distance(r, problem), r["time_us"]))
                if label != "exact":
                    label = f"{label}: {r['problem']} on {r['gpu']}"
                return families[r["family"]], r["config"], label
            if label == "exact":       # its best row may predate a family's current parameters
                trials = [t for t in store.trials(gid, problem.key) if t["status"] == OK and t["family"] in families
                          and _usable(families[t["family"]], problem, t["config"])]
                if trials:
                    t = min(trials, key=lambda t: t["time_us"])
                    return families[t["family"]], t["config"], "exact (its fastest trial the current code can run)"
    family = next(iter(families.values()))
    return family, family.default_config(problem), "default configuration (nothing tuned fits)"


def _usable(family, problem: Problem, config: dict) -> bool:
    """Whether a stored configuration (maybe another shape's, or from an older version of the family with
    other parameters) runs this problem."""
    return set(config) == set(family.space(problem)) and family.check(problem, config) is None


def _field(row, name):
    return bool(row[name]) if name == "bias" else row.get(name, _BLOCK_DEFAULTS.get(name))


def lookup(problem: Problem | None = None, *, db=None, device: int | None = None, **fields) -> TunedKernel:
    """The tuned kernel for `problem` (or the Problem fields given as keywords) on the current GPU."""
    if problem is None:
        problem = Problem(**fields)
    elif fields:
        raise TypeError("pass either a Problem or its fields as keywords, not both")
    gpu = current_gpu(device)
    key = (problem, str(db), gpu["name"], device)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        try:
            store = Store(db, readonly=True)
        except FileNotFoundError:
            store = None
        kernel = plan_kernel(problem, plans.choose_plan(problem, store, gpu), store, gpu)
        _CACHE[key] = kernel
        return kernel


def plan_kernel(problem: Problem, plan, store, gpu: dict):
    """A callable running `problem` as `plan`: its one kernel, or a BlockKernel of several."""
    if len(plan.steps) == 1:
        return _tuned(problem, store, gpu)
    last = len(plan.steps) - 1        # which adds an inverted residual's input, when it can
    adds = problem.residual and plans.adds_residual(plan.steps[-1].problem)
    return plans.BlockKernel(problem, [_tuned(s.problem, store, gpu, add_residual=adds and i == last)
                                       for i, s in enumerate(plan.steps)], plan)


def _tuned(problem: Problem, store, gpu, add_residual: bool = False) -> TunedKernel:
    family, config, fallback = choose(problem, store, gpu)
    if not fallback.startswith("exact"):
        warnings.warn(f"autotune: {problem.key} is not tuned for {gpu['name']}; using {fallback}", stacklevel=3)
    return TunedKernel(problem, family, config, gpu["arch"], fallback, add_residual=add_residual)
