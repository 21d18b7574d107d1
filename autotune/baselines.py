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


def torch_graph_time(torch, run_set, n_sets: int) -> float:
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


def torch_block(problem: Problem):
    """f(x, stage_weights, b_flat): the problem computed by PyTorch the way an eager model does -
    each stage's conv (cuDNN), its bias and activation, then the residual add. epilogue=False leaves
    out bias, activation and residual (the bare convolutions)."""
    import torch.nn.functional as F
    acts = {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6}
    stages = problem.stages()
    b_sizes = [s[0] for s in problem.bias_parts] if problem.bias else [0] * len(stages)

    def run(x, stage_weights, b, epilogue: bool = True):
        t, bo = x, 0
        for stage, weight, bn in zip(stages, stage_weights, b_sizes):
            bias = b[bo:bo + bn] if epilogue and problem.bias else None
            t = F.conv2d(t, weight, bias, stage.stride, stage.padding, 1, stage.C if stage.op == "dw" else 1)
            if epilogue:
                t = acts[stage.act](t)
            bo += bn
        return t + x if epilogue and problem.residual else t
    return run


def torch_sets(problem: Problem, n_sets: int | None = None) -> list:
    """Rotating (x, stage weights, flat weights, flat bias) sets as torch tensors on the GPU, in the
    problem's layout (NHWC as channels_last, weights too, as in a channels_last model), weights
    scaled by their fan-in so fp16 stays in range. The flat weights (our kernels' argument) hold the
    same values as the stage weights."""
    import torch
    p = problem
    dt = getattr(torch, p.dtype)
    fmt = torch.channels_last if p.layout == "nhwc" else torch.contiguous_format
    n_sets = n_sets or max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / max(p.min_bytes(), 1))))
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape):
        return torch.rand(*shape, device="cuda", dtype=dt, generator=gen) * 2 - 1

    sets = []
    for _ in range(n_sets):
        stage_w = [(rand(*shape) / math.sqrt(s.fan_in)).contiguous(memory_format=fmt)
                   for s, shape in zip(p.stages(), p.weight_parts)]
        flat_w = torch.cat([w.contiguous().reshape(-1) for w in stage_w])
        bias = rand(p.bias_shape[0] if p.bias else p.C_out)
        sets.append((rand(p.N, p.C, p.H, p.W).contiguous(memory_format=fmt), stage_w, flat_w, bias))
    return sets


def torch_times(problem: Problem) -> dict:
    """{'cudnn': conv + bias + activation as PyTorch runs them (like with like; a fused block: its
        stages one after another, and the residual add),
        'cudnn_conv': the bare convolutions, no bias, no activation, no residual (often the stronger
        peer: PyTorch adds a separate bias kernel for depthwise), plus versions}. Empty when torch is
        missing."""
    if not torch_available():
        return {}
    import torch
    sets = torch_sets(problem)
    run = torch_block(problem)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = problem.tf32  # like with like: exact fp32 unless the problem allows TF32
    try:
        with torch.no_grad():
            full = torch_graph_time(torch, lambda i: run(sets[i][0], sets[i][1], sets[i][3]), len(sets))
            bare = torch_graph_time(torch, lambda i: run(sets[i][0], sets[i][1], sets[i][3], epilogue=False),
                                    len(sets))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return {"cudnn": full, "cudnn_conv": bare,
            "versions": f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"}
