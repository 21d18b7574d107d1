"""Peer baselines for a problem: PyTorch/cuDNN timed exactly like our kernels (CUDA-graph replay of
launches rotating through fresh buffers), and the memory floor."""
from __future__ import annotations

import math

import numpy as np

from .problem import Problem
from .runner import GRAPH_LAUNCHES, MAX_SETS, REPEATS, ROTATE_BYTES


def memory_floor_us(problem: Problem, copy_bandwidth: float) -> float:
    """Minimum bytes over the copy bandwidth measured on the same GPU."""
    return problem.min_bytes() / copy_bandwidth * 1e6


def torch_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def _torch_graph_time(torch, run_set, n_sets: int) -> float:
    per_graph = max(n_sets, GRAPH_LAUNCHES // n_sets * n_sets)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(n_sets):            # warm-up: cuDNN picks its algorithms here
            run_set(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(per_graph):
            run_set(i % n_sets)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / per_graph)
    return float(np.median(times))


def torch_times(problem: Problem) -> dict:
    """{'cudnn': conv + bias + activation as PyTorch runs them (like with like),
        'cudnn_conv': the bare convolution, no bias, no activation (often the stronger peer: PyTorch
        adds a separate bias kernel for depthwise), plus versions}. Empty when torch is missing."""
    if not torch_available():
        return {}
    import torch
    import torch.nn.functional as F
    p = problem
    dt = getattr(torch, p.dtype)
    fmt = torch.channels_last if p.layout == "nhwc" else torch.contiguous_format
    groups = p.C if p.op == "dw" else 1
    n_sets = max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / max(p.min_bytes(), 1))))
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, device="cuda", dtype=dt, generator=gen) * 2 - 1

    sets = [(rand(p.N, p.C, p.H, p.W).contiguous(memory_format=fmt),
             rand(*p.weight_shape).contiguous(memory_format=fmt),
             rand(p.C_out)) for _ in range(n_sets)]
    act = {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6}[p.act]
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False        # our fp32 is exact fp32: compare like with like
    try:
        with torch.no_grad():
            full = _torch_graph_time(torch, lambda i: act(F.conv2d(
                sets[i][0], sets[i][1], sets[i][2] if p.bias else None, p.stride, p.padding, 1, groups)), n_sets)
            bare = _torch_graph_time(torch, lambda i: F.conv2d(
                sets[i][0], sets[i][1], None, p.stride, p.padding, 1, groups), n_sets)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return {"cudnn": full, "cudnn_conv": bare,
            "versions": f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"}
