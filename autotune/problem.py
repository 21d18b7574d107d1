"""Problem description: one convolution (or, later, a fused block) with its shapes and options.

A Problem is immutable and hashable; its `key` names it in the database. Sizes that change from call
to call (N, C, H, W, C_out) are runtime arguments of the kernels; everything else (op, kernel size,
stride, padding, bias, activation, dtype, layout) is baked into the compiled code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPS = ("dw", "pw")
KERNEL_SIZES = (3, 5, 7)
STRIDES = (1, 2)
ACTIVATIONS = ("none", "relu", "relu6")
DTYPES = ("float32", "float16")
LAYOUTS = ("nchw", "nhwc")
DTYPE_BYTES = {"float32": 4, "float16": 2}


class ProblemError(ValueError):
    """Bad problem description. `field` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _choice(field: str, value, allowed):
    # `in` alone would let 2.0 and True through for 2 and 1
    if value not in allowed or type(value) is not type(allowed[0]):
        raise ProblemError(field, f"{value!r} is not supported (choose from {', '.join(map(str, allowed))})")


def _positive_int(field: str, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProblemError(field, f"must be an integer, got {value!r}")
    if value <= 0:
        raise ProblemError(field, f"must be positive, got {value}")


@dataclass(frozen=True)
class Problem:
    op: str                   # "dw" (depthwise, groups = C) or "pw" (1x1)
    N: int
    C: int                    # input channels
    H: int
    W: int
    C_out: int | None = None  # pw only; dw has C_out = C
    k: int = 1                # dw: 3/5/7; pw: 1
    stride: int = 1
    padding: int | None = None  # default k // 2
    bias: bool = True
    act: str = "none"
    dtype: str = "float32"
    layout: str = "nchw"

    def __post_init__(self):
        _choice("op", self.op, OPS)
        for field in ("N", "C", "H", "W"):
            _positive_int(field, getattr(self, field))
        _choice("act", self.act, ACTIVATIONS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("layout", self.layout, LAYOUTS)
        if not isinstance(self.bias, bool):
            raise ProblemError("bias", f"must be True or False, got {self.bias!r}")
        if self.op == "dw":
            _choice("k", self.k, KERNEL_SIZES)
            _choice("stride", self.stride, STRIDES)
            if self.C_out is None:
                object.__setattr__(self, "C_out", self.C)
            elif self.C_out != self.C:
                raise ProblemError("C_out", f"depthwise keeps the channel count: C_out must equal C={self.C}, got {self.C_out}")
            if self.padding is None:
                object.__setattr__(self, "padding", self.k // 2)
            if isinstance(self.padding, bool) or not isinstance(self.padding, int) or not 0 <= self.padding < self.k:
                raise ProblemError("padding", f"must be an integer in [0, {self.k - 1}], got {self.padding!r}")
            for field, size in (("H", self.H), ("W", self.W)):
                if size + 2 * self.padding < self.k:
                    raise ProblemError(field, f"{size} (+ padding {self.padding} each side) is smaller than the kernel size {self.k}")
        else:
            if self.C_out is None:
                raise ProblemError("C_out", "pointwise needs C_out")
            _positive_int("C_out", self.C_out)
            if self.k != 1 or type(self.k) is not int:
                raise ProblemError("k", f"pointwise convolutions are 1x1, got k={self.k}")
            if self.stride != 1 or type(self.stride) is not int:
                raise ProblemError("stride", f"pointwise convolutions here have stride 1, got {self.stride}")
            if self.padding not in (None, 0):
                raise ProblemError("padding", f"pointwise convolutions have no padding, got {self.padding}")
            object.__setattr__(self, "padding", 0)

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def H_out(self) -> int:
        return (self.H + 2 * self.padding - self.k) // self.stride + 1

    @property
    def W_out(self) -> int:
        return (self.W + 2 * self.padding - self.k) // self.stride + 1

    def _activation_shape(self, C, H, W):
        return (self.N, C, H, W) if self.layout == "nchw" else (self.N, H, W, C)

    @property
    def input_shape(self) -> tuple:
        return self._activation_shape(self.C, self.H, self.W)

    @property
    def output_shape(self) -> tuple:
        return self._activation_shape(self.C_out, self.H_out, self.W_out)

    @property
    def weight_shape(self) -> tuple:
        """PyTorch's layout: [C,1,K,K] for depthwise, [C_out,C_in,1,1] for pointwise."""
        return (self.C, 1, self.k, self.k) if self.op == "dw" else (self.C_out, self.C, 1, 1)

    @property
    def bias_shape(self) -> tuple | None:
        return (self.C_out,) if self.bias else None

    # ---- cost ---------------------------------------------------------------------------------
    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def min_bytes(self) -> int:
        """Fewest bytes any kernel must move: input read once, output written once, weights once."""
        n = self.N * self.C * self.H * self.W + self.N * self.C_out * self.H_out * self.W_out
        n += _prod(self.weight_shape) + (self.C_out if self.bias else 0)
        return n * self.itemsize

    def flops(self) -> int:
        taps = self.k * self.k if self.op == "dw" else self.C
        return 2 * self.N * self.C_out * self.H_out * self.W_out * taps

    # ---- identity -----------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """Stable name, e.g. 'dw k3 s1 p1 N16 C32 112x112 relu6 bias float16 nhwc'."""
        shape = f"N{self.N} C{self.C}" + (f"->{self.C_out}" if self.op == "pw" else "")
        conv = f"k{self.k} s{self.stride} p{self.padding}" if self.op == "dw" else "1x1"
        return (f"{self.op} {conv} {shape} {self.H}x{self.W} {self.act}"
                f"{' bias' if self.bias else ''} {self.dtype} {self.layout}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ProblemError(sorted(unknown)[0], "unknown field")
        return cls(**d)

    def replace(self, **changes) -> "Problem":
        """A copy with some fields changed; derived defaults (a depthwise C_out, the padding) follow."""
        if self.op == "dw" and "C" in changes and "C_out" not in changes:
            changes["C_out"] = None
        if "k" in changes and "padding" not in changes:
            changes["padding"] = None
        return dataclasses.replace(self, **changes)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
