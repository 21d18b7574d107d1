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
    """{'cudnn': conv + bias + activation as PyTorch runs them (like with like; a fused block: its
        stages one after another, and the residual add),
        'cudnn_conv': the bare convolutions, no bias, no activation, no residual (often the stronger
        peer: PyTorch adds a separate bias kernel for depthwise), plus versions}. Empty when torch is
        missing."""
    if not torch_available():
        return {}
    import torch
    import torch.nn.functional as F
    p = problem
    dt = getattr(torch, p.dtype)
    fmt = torch.channels_last if p.layout == "nhwc" else torch.contiguous_format
    n_sets = max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / max(p.min_bytes(), 1))))
    gen = torch.Generator(device="cuda").manual_seed(0)
    acts = {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6}

    def rand(*shape):
        return torch.rand(*shape, device="cuda", dtype=dt, generator=gen) * 2 - 1

    stages = p.stages()
    # per set: the input, then (weight, bias) per stage; weights scaled so fp16 stays in range
    sets = [(rand(p.N, p.C, p.H, p.W).contiguous(memory_format=fmt),
             [((rand(*w) / math.sqrt(s.k * s.k if s.op == "dw" else s.C)).contiguous(memory_format=fmt),
               rand(s.C_out)) for s, w in zip(stages, p.weight_parts)]) for _ in range(n_sets)]

    def run(i, epilogue: bool):
        x, params = sets[i]
        t = x
        for s, (w, b) in zip(stages, params):
            t = F.conv2d(t, w, b if epilogue and p.bias else None, s.stride, s.padding, 1,
                         s.C if s.op == "dw" else 1)
            if epilogue:
                t = acts[s.act](t)
        return t + x if epilogue and p.residual else t

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False        # our fp32 is exact fp32: compare like with like
    try:
        with torch.no_grad():
            full = _torch_graph_time(torch, lambda i: run(i, True), n_sets)
            bare = _torch_graph_time(torch, lambda i: run(i, False), n_sets)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return {"cudnn": full, "cudnn_conv": bare,
            "versions": f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"}
