"""benchmarks/overlap_bound.py without a GPU: its least-arithmetic counts follow the block's shape, the
per-step mix keeps the block's proportions, and every mix it times compiles for sm_90 as written - no
local memory, no wgmma serialized by ptxas (either would make the bound slower than the hardware, so no
longer a bound)."""
import importlib
import sys
from pathlib import Path

import pytest

from autotune import compiler
from autotune.problem import Problem

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
overlap_bound = importlib.import_module("overlap_bound")

BLOCK_56 = Problem("ir", N=16, C=24, H=56, W=56, C_out=24, k=3, expansion=6, act="relu6", dtype="float16", layout="nhwc")
BLOCK_112_S2 = Problem("ir", N=16, C=16, H=112, W=112, C_out=24, k=3, stride=2, expansion=6, act="relu6",
                       dtype="float16", layout="nhwc")
BLOCK_T1 = Problem("ir", N=16, C=32, H=112, W=112, C_out=16, k=3, expansion=1, act="relu6", dtype="float16",
                   layout="nhwc")


def test_least_arithmetic_scales_with_the_block():
    c56, c112 = overlap_bound.least_arithmetic(BLOCK_56), overlap_bound.least_arithmetic(BLOCK_112_S2)
    # Stride 2 leaves the expand (every input pixel) and its activation as they were, a quarter of the
    # depthwise: 112x112 at stride 2 expands 4x the pixels of 56x56 and computes as many outputs.
    assert c112["act"] / c56["act"] == pytest.approx(4 * 96 / 144)
    assert c112["hfma2"] / c56["hfma2"] == pytest.approx(96 / 144)
    assert c56["hfma2"] == 16 * 56 * 56 * 144 * 9 / 64      # two channels a lane, 32 lanes
    t1 = overlap_bound.least_arithmetic(BLOCK_T1)
    assert t1["act"] == 0 and t1["mma"] == 16 * 112 * 112 * 32 * 16 / 2048   # no expand: the projection only


def test_block_mix_keeps_the_proportions():
    counts = overlap_bound.least_arithmetic(BLOCK_56)
    mix, steps = overlap_bound.block_mix(counts)
    for kind, count in counts.items():
        assert mix[kind] * steps == pytest.approx(count, rel=0.07), kind


MIXES = [*overlap_bound.RATE_MIXES.values(),
         *overlap_bound.ways_to_issue(overlap_bound.block_mix(overlap_bound.least_arithmetic(BLOCK_56))[0]).values()]


@pytest.mark.parametrize("mix", MIXES, ids=lambda m: "+".join(f"{k}{v}" for k, v in m.items()))
@pytest.mark.parametrize("copy", [False, True])
def test_every_mix_compiles_without_local_memory_or_serialized_wgmma(mix, copy):
    binary = compiler.compile_code(overlap_bound.render(BLOCK_56, copy, 2 * 132, mix, 10_000), "sm_90")
    assert binary.arch == ("sm_90a" if "wgmma" in mix or "wgmma8" in mix else "sm_90")
    assert binary.spill_bytes == 0
    assert " 0 bytes stack frame" in binary.log, binary.log
    assert "serialized" not in binary.log, binary.log
