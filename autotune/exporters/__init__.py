"""Exporters: carry tuned kernels into other runtimes (e.g. `onnx_fuse` rewrites an ONNX graph so
that its depthwise and pointwise convolutions run as autotune TensorRT plugins)."""
