"""Our tuned kernels timed both ways they can be launched, beside PyTorch's, all in one run: with
programmatic dependent launch (as lookup launches them on sm_90, and as sweeps time them since
session 8) and without it (as sweeps timed them before), against cuDNN with bias and activation and
cuDNN's bare convolution (the stronger peer). Each time is CUDA-graph replay over rotating buffers.

    python3 benchmarks/launch_modes.py [--db tuned_db/autotune.db] [--op dw] [--batch 16]
                                       [--dtype float16] [--layout nhwc]
"""
import argparse
import statistics

from autotune import codegen, compiler, kernels, runner
from autotune.baselines import torch_times
from autotune.lookup import current_gpu
from autotune.models import model_problems
from autotune.store import Store, gpu_id


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    ap.add_argument("--op", default="dw")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--layout", default="nhwc")
    args = ap.parse_args()
    store = Store(args.db, readonly=True)
    gpu = current_gpu()
    gid = gpu_id(gpu)
    problems = model_problems("mobilenet_v2", ops=(args.op,), batches=(args.batch,), dtypes=(args.dtype,),
                              layouts=(args.layout,))
    print(f"{gid}: {args.op} layers of MobileNetV2, batch {args.batch} {args.dtype} {args.layout}; "
          "us per launch (x = the stronger cuDNN peer / ours)")
    print(f"{'layer':58s} {'PDL':>7s} {'no PDL':>7s} {'cuDNN':>7s} {'conv':>7s} {'x PDL':>6s} {'x no PDL':>8s}")
    ratios = {"pdl": [], "plain": []}
    for p in problems:
        best = store.best(gid, p.key)
        if best is None:
            print(f"{p.key:58s} (not tuned on this GPU)")
            continue
        family = kernels.family_named(best["family"])
        binary = compiler.compile_code(codegen.render(family, p, best["config"]).code, gpu["arch"])
        fn = runner.load_function(binary, family.entry)
        data = runner.ProblemData.create(p, seed=0)
        launch = family.launch(p, best["config"])
        ok, err = runner.verify(fn, launch, data)
        assert ok, f"{p.key}: worst error / tolerance {err}"
        ours = {mode: runner.time_kernel(fn, launch, data, programmatic=(mode == "pdl")) for mode in ratios}
        del data
        peers = torch_times(p)
        peer = min(peers["cudnn"], peers["cudnn_conv"])
        for mode in ratios:
            ratios[mode].append(peer / ours[mode])
        print(f"{p.key:58s} {ours['pdl']:7.2f} {ours['plain']:7.2f} {peers['cudnn']:7.2f} {peers['cudnn_conv']:7.2f} "
              f"{peer / ours['pdl']:5.2f}x {peer / ours['plain']:7.2f}x")
    print(f"median speedup over the stronger peer: {statistics.median(ratios['pdl']):.2f}x with PDL, "
          f"{statistics.median(ratios['plain']):.2f}x without")


if __name__ == "__main__":
    main()
