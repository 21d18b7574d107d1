"""autotune: tuned depthwise and pointwise convolution kernels for NVIDIA GPUs.

    import autotune
    conv = autotune.lookup(op="dw", N=16, C=32, H=112, W=112, k=3, act="relu6",
                           dtype="float16", layout="nhwc")
    y = conv(x, w, bias)
"""
from .lookup import lookup          # noqa: F401  (CuPy is imported only when a kernel runs)
from .problem import Problem, ProblemError

__version__ = "0.1.0"
__all__ = ["Problem", "ProblemError", "lookup"]
