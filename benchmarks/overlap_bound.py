"""A lower bound on any one-kernel inverted residual, measured: the block's bytes moved once while the
least arithmetic it needs is issued beside them, independent of the data (overlap_bound.cu.j2). Timed
like our kernels (CUDA-graph replay, programmatic dependent launch) over several grids, with each half
alone and an empty launch beside it. Against the issue's bar (2 x the memory floor): if even the
fastest of these launches is over it, no kernel meets it.

    python3 benchmarks/overlap_bound.py --rates --ours "ir t6 k3 s1 p1 N16 C24->24 56x56 relu6/none bias float16 nhwc"

The least arithmetic, in warp instructions shared out over the grid's warps, counted as favourably as
the block allows:
  mma     m16n8k16 of the expand (every input pixel; its bias in the accumulator's start; a fractional k
          step counted as a fraction) and of the projection: MACs / 2048;
  HFMA2   the depthwise, two channels an instruction: output pixels x hidden x k^2 / 2;
  act     the expand's ReLU6, one fp16x2 op a pair of values (a saturating add on values pre-scaled by
          1/6 does it in one); the depthwise's folded into its last HFMA2 the same way;
and nothing else: no loads of fragments, no shuffles or shared-memory traffic to bring a window's pixels
together, no index math, no conversions. Each way of issuing it is tried: the 1x1s on mma.sync or
wgmma, the depthwise on fp16 pairs, in fp32, or on tensor cores (a block-diagonal B: 8x the MACs).
--rates first times each kind of instruction alone and in pairs (whether the pipes overlap).
"""
import argparse
import math
import pathlib
import subprocess

import jinja2

from autotune import codegen, compiler, runner
from autotune.baselines import memory_floor_us
from autotune.bench import bench_problem
from autotune.device import describe
from autotune.kernels import Launch, ceil_div
from autotune.kernels.copy import largest_array_units
from autotune.store import Store

THREADS = 256
MMA_PER_STEP = 8    # independent mma accumulators per warp; the other kinds in proportion
BENCH_DIR = pathlib.Path(__file__).resolve().parent


def least_arithmetic(p) -> dict:
    """Warp instructions of each kind the block cannot do without (see the module's docstring)."""
    pix_in, pix_out, hidden = p.N * p.H * p.W, p.N * p.H_out * p.W_out, p.hidden
    expand_macs = pix_in * p.C * hidden if hidden != p.C else 0
    return {"mma": (expand_macs + pix_out * hidden * p.C_out) / (16 * 8 * 16),
            "hfma2": pix_out * hidden * p.k * p.k / 2 / 32,
            "act": (pix_in * hidden / 2 / 32) if hidden != p.C else 0}


def render(p, copy: bool, blocks: int, mix: dict, steps: int) -> str:
    """The kernel moving p's bytes (copy) and issuing `steps` steps of `mix` (instructions of each kind
    per step) over the grid."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(BENCH_DIR), str(codegen.templates_dir())]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    params = codegen.common_params(p) | {
        "COPY": copy, "ARITH": steps > 0, "WEIGHT_ELEMS": math.prod(p.weight_shape), "THREADS": THREADS,
        "UNITS": ceil_div(largest_array_units(p), blocks * THREADS), "STEPS": steps, "MMA_PER_STEP": mix.get("mma", 0),
        "FMA_PER_STEP": mix.get("hfma2", 0), "ACT_PER_STEP": mix.get("act", 0), "FFMA_PER_STEP": mix.get("ffma", 0),
        "HMMA16_PER_STEP": mix.get("mma16", 0), "WGMMA_PER_STEP": mix.get("wgmma", 0),
        "WGMMA8_PER_STEP": mix.get("wgmma8", 0), "SPLIT": bool(mix.get("split"))}
    return env.get_template("overlap_bound.cu.j2").render(**params)


def block_mix(counts: dict) -> tuple[dict, int]:
    """Per-step instructions in the block's proportions (MMA_PER_STEP mma a step), and the steps."""
    mix = {k: round(MMA_PER_STEP * v / counts["mma"]) for k, v in counts.items()}
    return mix, round(counts["mma"] / MMA_PER_STEP)


def ways_to_issue(mix: dict) -> dict:
    """The block's per-step mix issued each way a kernel could: the 1x1s' tensor-core work as mma.sync or
    as wgmma (a warp's step of one m64n64k16 is 8 m16n8k16's); the depthwise and activation on fp16 pairs,
    in fp32 (twice the instructions) or on tensor cores too (block-diagonal B: 8x the MACs, m16n8k16 or
    m64n8k16); each with the tensor-core part and the rest in the same warps or in separate ones (split)."""
    fp32 = {"ffma": 2 * (mix["hfma2"] + mix["act"])}
    dw_tc = round(8 * mix["hfma2"] * 2 / 2048 * 32)       # HFMA2 (2 MACs a lane) -> m16n8k16s, x8 for the diagonal
    ways = {
        "mma.sync, HFMA2": mix, "wgmma, HFMA2": {"wgmma": mix["mma"] // 8, "hfma2": mix["hfma2"], "act": mix["act"]},
        "mma.sync, FFMA": {"mma": mix["mma"], **fp32}, "wgmma, FFMA": {"wgmma": mix["mma"] // 8, **fp32},
        "mma.sync, dw mma": {"mma": mix["mma"] + dw_tc, "act": mix["act"]},
        "wgmma, dw wgmma": {"wgmma": mix["mma"] // 8, "wgmma8": dw_tc, "act": mix["act"]}}
    return ways | {f"{name}, split": {**m, "split": 1} for name, m in ways.items()}


def timed(p, data, gpu, copy: bool, blocks: int, mix: dict, steps: int) -> tuple[float, int]:
    binary = compiler.compile_code(render(p, copy, blocks, mix, steps), gpu["arch"])
    fn = runner.load_function(binary, "overlap_bound")
    return runner.time_kernel(fn, Launch((blocks, 1, 1), (THREADS, 1, 1)), data, programmatic=True), binary.registers


RATE_MIXES = {"hfma2": {"hfma2": 32}, "ffma": {"ffma": 32}, "hfma2+ffma": {"hfma2": 16, "ffma": 16},
              "mma": {"mma": 8}, "mma16": {"mma16": 8}, "wgmma": {"wgmma": 1}, "wgmma8": {"wgmma8": 8},
              "mma+hfma2": {"mma": 8, "hfma2": 48}, "mma+ffma": {"mma": 8, "ffma": 48},
              "wgmma+hfma2": {"wgmma": 1, "hfma2": 48}, "wgmma+ffma": {"wgmma": 1, "ffma": 48},
              "mma|hfma2": {"mma": 8, "hfma2": 48, "split": 1}, "wgmma|hfma2": {"wgmma": 1, "hfma2": 48, "split": 1}}
RATE_STEPS = 250_000        # steps per rate launch (10-50 us): long enough to dwarf the launch


def rates(p, data, gpu, bps_list):
    """What a warp's step of each mix costs an SM sub-partition, in cycles at the SM's maximum clock
    (the time over an empty launch's; a wgmma step is 8 m16n8k16's work a warp)."""
    cycles = lambda us, bps: (us - empty[bps]) * 1e-6 * gpu["max_clock_hz"] * gpu["sm_count"] * 4
    empty = {bps: timed(p, data, gpu, False, bps * gpu["sm_count"], {}, 0)[0] for bps in bps_list}
    for name, mix in RATE_MIXES.items():
        line = []
        for bps in bps_list:
            us, _ = timed(p, data, gpu, False, bps * gpu["sm_count"], mix, RATE_STEPS)
            line.append(f"{bps}/SM {us:6.2f} us {cycles(us, bps) / RATE_STEPS:5.1f}")
        print(f"  {name:11s} " + "   ".join(line), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problems", nargs="+", help="problem keys of the database")
    parser.add_argument("--blocks-per-sm", default="1,2,3,4,6,8")
    parser.add_argument("--rates", action="store_true", help="first measure each pipe's rate alone")
    parser.add_argument("--ours", action="store_true", help="also time the shipped plan, as autotune bench does (needs torch)")
    args = parser.parse_args()
    bps_list = [int(b) for b in args.blocks_per_sm.split(",")]
    gpu = describe()
    gpu["max_clock_hz"] = float(subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                                               capture_output=True, text=True, check=True).stdout.split()[0]) * 1e6
    bandwidth = gpu["copy_bandwidth"]
    print(f"{gpu['name']}, {gpu['sm_count']} SMs, copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    store = Store(None, readonly=True)
    for key in args.problems:
        p = store.problem(key)
        counts = least_arithmetic(p)
        floor = memory_floor_us(p, bandwidth)
        print(f"\n{key}: floor {floor:.2f} us, bar (2 x floor) {2 * floor:.2f} us; least arithmetic "
              + ", ".join(f"{k} {v / 1e3:.0f}k" for k, v in counts.items())
              + f" warp instructions ({sum(counts.values()) / 1e6:.2f}M)")
        data = runner.ProblemData.create(p, seed=1)
        if args.rates and key == args.problems[0]:
            print("cycles per step of each mix (16 independent chains a warp; blocks per SM, time, cycles):")
            rates(p, data, gpu, bps_list)
        mix, steps = block_mix(counts)
        print("  issued " + ", ".join(f"{k} {v * steps / 1e3:.0f}k" for k, v in mix.items()))
        best = math.inf
        for tensor, tmix in ways_to_issue(mix).items():
            for bps in bps_list:
                blocks = bps * gpu["sm_count"]
                times = {}
                for name, copy, arith_steps in (("empty", False, 0), ("copy", True, 0), ("arith", False, steps),
                                                ("both", True, steps)):
                    times[name], registers = timed(p, data, gpu, copy, blocks, tmix, arith_steps)
                best = min(best, times["both"])
                print(f"  {tensor:23s} {bps} blocks/SM ({registers} registers): " + "  ".join(
                    f"{k} {v:6.2f}" for k, v in times.items()) + " us", flush=True)
        print(f"  fastest copy + arithmetic {best:.2f} us = {best / (2 * floor):.2f} x the bar")
        if args.ours:
            row = bench_problem(p, copy_bandwidth=bandwidth)
            print(f"  ours (the shipped database's plan, {row.how}): {row.ours_us:.2f} us = {row.ours_us / (2 * floor):.2f} x the bar, "
                  f"{row.ours_us / best:.2f} x the bound; PyTorch eager {row.eager_us:.2f} us; bare copy (copy_floor) {row.copy_us:.2f} us")


if __name__ == "__main__":
    main()
