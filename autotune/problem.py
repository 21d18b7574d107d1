"""Problem description: one convolution or one fused block, with its shapes and options.

Ops: "dw" (depthwise, groups = C), "pw" (1x1), "conv" (a dense KxK conv, groups = 1: a network's
stem, few input channels), "dwpw" (depthwise + act, then 1x1 + act2: the MobileNetV1 block), "pwdw"
(1x1 from C to C_out + act, then depthwise + act: an inverted residual's expand and depthwise, whose
project 1x1 follows as a kernel of its own) and "ir" (the MobileNetV2 inverted residual: 1x1 expand by
`expansion` + act, depthwise + act, 1x1 project + act2, plus the input when stride is 1 and C == C_out).

A Problem is immutable and hashable; its `key` names it in the database. Sizes that change from call
to call (N, C, H, W, C_out) are runtime arguments of the kernels; everything else (op, kernel size,
stride, padding, bias, activations, expansion, dtype, layout) is baked into the compiled code.

A fused block takes all its weights as one flat array and all its biases as another: each stage's
tensor in PyTorch's layout, concatenated in stage order (`weight_parts`, `bias_parts`), so every
kernel keeps the one signature (x, w, bias, y, sizes).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

OPS = ("dw", "pw", "conv", "dwpw", "pwdw", "ir")
FUSED_OPS = ("dwpw", "pwdw", "ir")
ENDS_WITH_1X1 = ("dwpw", "ir")     # blocks whose last stage is a 1x1 with an activation of its own (act2)
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
    op: str                   # "dw", "pw", "conv", "dwpw", "pwdw" or "ir" (see above)
    N: int
    C: int                    # input channels
    H: int
    W: int
    C_out: int | None = None  # pw, conv and fused blocks (pwdw: the expanded channels); dw has C_out = C
    k: int = 1                # dw, conv and fused blocks: 3/5/7; pw: 1
    stride: int = 1
    padding: int | None = None  # default k // 2
    bias: bool = True
    act: str = "none"         # after the conv; in a fused block after expand and depthwise
    dtype: str = "float32"
    layout: str = "nchw"
    act2: str = "none"        # dwpw and ir: after the last 1x1 (pwdw ends with its depthwise: none)
    expansion: int = 1        # ir: hidden channels = C * expansion (1: no expand stage)
    tf32: bool = False        # float32 only: TF32 tensor cores allowed (an explicit option; off = exact fp32)

    def __post_init__(self):
        _choice("op", self.op, OPS)
        for field in ("N", "C", "H", "W"):
            _positive_int(field, getattr(self, field))
        _choice("act", self.act, ACTIVATIONS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("layout", self.layout, LAYOUTS)
        if not isinstance(self.bias, bool):
            raise ProblemError("bias", f"must be True or False, got {self.bias!r}")
        _choice("act2", self.act2, ACTIVATIONS)
        if not isinstance(self.tf32, bool):
            raise ProblemError("tf32", f"must be True or False, got {self.tf32!r}")
        if self.tf32 and self.dtype != "float32":
            raise ProblemError("tf32", f"TF32 is an option for float32 problems, not {self.dtype}")
        _positive_int("expansion", self.expansion)
        if self.op != "ir" and self.expansion != 1:
            raise ProblemError("expansion", f"only inverted residuals (op 'ir') expand, got {self.expansion}")
        if self.op not in ENDS_WITH_1X1 and self.act2 != "none":
            raise ProblemError("act2", "only dwpw and ir blocks end with a 1x1 that has an activation of its own "
                                       f"(act2), got {self.act2!r}")
        if self.op == "pw":
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
            return
        _choice("k", self.k, KERNEL_SIZES)
        _choice("stride", self.stride, STRIDES)
        if self.op == "dw":
            if self.C_out is None:
                object.__setattr__(self, "C_out", self.C)
            elif self.C_out != self.C:
                raise ProblemError("C_out", f"depthwise keeps the channel count: C_out must equal C={self.C}, got {self.C_out}")
        else:
            if self.C_out is None:
                raise ProblemError("C_out", f"{'a dense conv' if self.op == 'conv' else 'a fused block'} ({self.op}) needs C_out")
            _positive_int("C_out", self.C_out)
        if self.padding is None:
            object.__setattr__(self, "padding", self.k // 2)
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or not 0 <= self.padding < self.k:
            raise ProblemError("padding", f"must be an integer in [0, {self.k - 1}], got {self.padding!r}")
        for field, size in (("H", self.H), ("W", self.W)):
            if size + 2 * self.padding < self.k:
                raise ProblemError(field, f"{size} (+ padding {self.padding} each side) is smaller than the kernel size {self.k}")

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

    # ---- fused blocks ---------------------------------------------------------------------------
    @property
    def hidden(self) -> int:
        """Channels between the stages of a fused block (the depthwise's channels)."""
        return self.C_out if self.op == "pwdw" else self.C * self.expansion

    @property
    def residual(self) -> bool:
        """An inverted residual adds its input when the shapes allow."""
        return self.op == "ir" and self.stride == 1 and self.C == self.C_out

    def stages(self) -> list:
        """The convolutions a block runs one after another (a single conv is its own only stage)."""
        if self.op not in FUSED_OPS:
            return [self]
        common = dict(N=self.N, bias=self.bias, dtype=self.dtype, layout=self.layout)
        hidden, out = self.hidden, []
        if self.op == "pwdw" or self.op == "ir" and self.expansion > 1:
            out.append(Problem("pw", C=self.C, H=self.H, W=self.W, C_out=hidden, act=self.act, **common))
        out.append(Problem("dw", C=hidden, H=self.H, W=self.W, k=self.k, stride=self.stride,
                           padding=self.padding, act=self.act, **common))
        if self.op != "pwdw":
            out.append(Problem("pw", C=hidden, H=self.H_out, W=self.W_out, C_out=self.C_out, act=self.act2, **common))
        if self.tf32:                # the 1x1 stages may use TF32; a depthwise has no product to round
            out = [s.replace(tf32=True) if s.op == "pw" else s for s in out]
        return out

    @property
    def weight_parts(self) -> list:
        """Shapes of the stages' weights, in PyTorch's layout and stage order: [C,1,K,K] for a
        depthwise, [C_out,C_in,K,K] for a 1x1 (K = 1) or a dense conv."""
        return [(s.C, 1, s.k, s.k) if s.op == "dw" else (s.C_out, s.C, s.k, s.k) for s in self.stages()]

    @property
    def bias_parts(self) -> list:
        return [(s.C_out,) for s in self.stages()] if self.bias else []

    @property
    def weight_shape(self) -> tuple:
        """One conv: its PyTorch weight shape. A fused block: the flat concatenation of weight_parts."""
        parts = self.weight_parts
        return parts[0] if len(parts) == 1 else (sum(_prod(s) for s in parts),)

    @property
    def bias_shape(self) -> tuple | None:
        return (sum(s[0] for s in self.bias_parts),) if self.bias else None

    # ---- cost ---------------------------------------------------------------------------------
    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def min_bytes(self) -> int:
        """Fewest bytes any kernel must move: input read once, output written once, weights once."""
        n = self.N * self.C * self.H * self.W + self.N * self.C_out * self.H_out * self.W_out
        n += _prod(self.weight_shape) + (self.bias_shape[0] if self.bias else 0)
        return n * self.itemsize

    def flops(self) -> int:
        if self.op in FUSED_OPS:
            return sum(s.flops() for s in self.stages())
        return 2 * self.N * self.C_out * self.H_out * self.W_out * self.fan_in

    @property
    def fan_in(self) -> int:
        """Inputs summed into one output of a single conv: its taps times the channels each reads."""
        return self.k * self.k * (1 if self.op == "dw" else self.C)

    # ---- identity -----------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """Stable name, e.g. 'dw k3 s1 p1 N16 C32 112x112 relu6 bias float16 nhwc',
        'conv k3 s2 p1 N16 C3->32 224x224 relu6 bias float16 nhwc',
        'pwdw k3 s2 p1 N16 C16->96 112x112 relu6 bias float16 nhwc',
        'ir t6 k3 s1 p1 N16 C24->24 56x56 relu6/none bias float16 nhwc'."""
        shape = f"N{self.N} C{self.C}" + (f"->{self.C_out}" if self.op != "dw" else "")
        conv = "1x1" if self.op == "pw" else f"k{self.k} s{self.stride} p{self.padding}"
        if self.op == "ir":
            conv = f"t{self.expansion} {conv}"
        acts = f"{self.act}/{self.act2}" if self.op in ENDS_WITH_1X1 else self.act
        return (f"{self.op} {conv} {shape} {self.H}x{self.W} {acts}"
                f"{' bias' if self.bias else ''} {self.dtype} {self.layout}{' tf32' if self.tf32 else ''}")

    @property
    def tolerance(self) -> str:
        """The tolerance results are checked at (reference.RTOL): TF32 keeps fp16's 10-bit mantissa."""
        return "tf32" if self.tf32 else self.dtype

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
        if self.op == "dw" and "C" in changes and "C_out" not in changes:   # dw: C_out follows C
            changes["C_out"] = None
        if "k" in changes and "padding" not in changes:
            changes["padding"] = None
        return dataclasses.replace(self, **changes)


def shape_distance(fields, problem: "Problem") -> float:
    """How far another problem's sizes (a dict or Problem with N, C, H, W, C_out) are from
    `problem`'s: the sum of absolute log ratios, so halving and doubling count alike."""
    get = fields.get if isinstance(fields, dict) else lambda f: getattr(fields, f)
    return sum(abs(math.log(get(f) / getattr(problem, f))) for f in ("N", "C", "H", "W", "C_out"))


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
