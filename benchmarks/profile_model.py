"""GPU time of every kernel in one forward of a torchvision model optimized by autotune.torch (random
weights and BatchNorm statistics, eval mode), from the PyTorch profiler: where the model's time goes.

    python3 benchmarks/profile_model.py [--model mobilenet_v2] [--batch 16] [--db tuned_db/autotune.db]
"""
import argparse

import torch
import torchvision

from autotune import torch as autotune_torch

ITERATIONS = 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--db", default=None)
    args = ap.parse_args()
    dt, fmt = torch.float16, torch.channels_last
    torch.manual_seed(0)
    net = getattr(torchvision.models, args.model)().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net = net.to("cuda", dt).to(memory_format=fmt)
    fast = autotune_torch.optimize(net, db=args.db)
    x = torch.rand(args.batch, 3, 224, 224, device="cuda", dtype=dt).contiguous(memory_format=fmt)
    with torch.no_grad():
        for _ in range(5):
            fast(x)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(ITERATIONS):
                fast(x)
            torch.cuda.synchronize()
    kernels = [(e.name, e.device_time) for e in prof.events() if e.device_type.name == "CUDA"]
    per_forward = kernels[:len(kernels) // ITERATIONS]
    for name, us in per_forward:
        print(f"{us:8.2f} us  {name[:110]}")
    print(f"{len(per_forward)} kernels per forward, {sum(us for _, us in per_forward):.1f} us of kernel time; "
          f"{fast.autotune_blocks} blocks on tuned kernels, {fast.autotune_folded} BatchNorms folded")


if __name__ == "__main__":
    main()
