"""Depthwise convolution families: one per layout (templates/depthwise_{nhwc,nchw}.cu.j2), plus two NHWC
ones, on tensor cores and streaming rows through shared memory.

NHWC vectorizes over channels (a thread owns VEC adjacent channels); NCHW works plane by plane and
vectorizes along W. Both block an OUT_H x OUT_W output patch per thread and can stage the block's
input tile, halo included, in shared memory.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from . import Launch, ceil_div, resource_violation, tile_grid

_REGISTER_OVERHEAD = 32   # indices, pointers, loop state: what ptxas adds on top of the arrays
_MAX_WEIGHT_REGISTERS = 72  # NHWC: K*K*VEC weights kept in registers up to this many


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _vector_widths(problem) -> tuple:
    """Widths whose accesses stay within 16 bytes."""
    return (8, 4, 2, 1) if problem.dtype == "float16" else (4, 2, 1)


def _nhwc_vector_widths(problem) -> tuple:
    """The two widest widths dividing C: narrower NHWC accesses were never the fastest, and every
    value dropped makes the space easier to search."""
    return tuple(v for v in _vector_widths(problem) if problem.C % v == 0)[:2]


def _rows_in_flight(rows: int) -> int:
    """Input rows whose registers are live at once: with the row loop unrolled ptxas hoists loads
    of later rows ahead of the arithmetic, about half of them (fitted to ptxas's reports on sm_90)."""
    return min(rows, 2 + rows // 2)


def _check_channel_block(problem, vec: int, cpb: int) -> str | None:
    """NHWC: VEC adjacent channels per thread, blocks of ch_per_block channels."""
    if problem.C % vec:
        return f"vec={vec} does not divide C={problem.C}"
    if cpb % vec:
        return "ch_per_block not a multiple of vec"
    if cpb > max(8, vec, _next_pow2(problem.C)):
        return "ch_per_block larger than the channel count"
    return None


def _check_tile(problem, cfg, min_tile_w: int) -> str | None:
    if cfg["tile_h"] % cfg["out_h"] or cfg["tile_w"] % cfg["out_w"]:
        return "tile not divisible by outputs per thread"
    # A tile far larger than the image only adds idle threads (one row/column of outputs per thread
    # always fits, so even a 1x1 output keeps a configuration).
    if cfg["tile_h"] > max(cfg["out_h"], _next_pow2(problem.H_out)) or \
            cfg["tile_w"] > max(cfg["out_w"], _next_pow2(problem.W_out), min_tile_w):
        return "tile larger than the output"
    return None


@dataclass(frozen=True)
class DepthwiseFamily:
    layout: str

    @property
    def name(self):
        return f"depthwise_{self.layout}"

    @property
    def template(self):
        return f"depthwise_{self.layout}.cu.j2"

    entry = "dw_conv2d"

    def applies(self, problem) -> bool:
        return problem.op == "dw" and problem.layout == self.layout

    # ---- search space -------------------------------------------------------------------------
    def space(self, problem) -> dict:
        if self.layout == "nhwc":
            return {
                "vec": _nhwc_vector_widths(problem),
                "ch_per_block": (8, 16, 32, 64, 128),
                "tile_h": (1, 2, 4, 8, 16),
                "tile_w": (1, 2, 4, 8, 16, 32),
                "out_h": (1, 2, 4, 8),
                "out_w": (1, 2, 4),
                "adjacent_cols": (False, True),
                "stage_input": (False, True),
                "unroll_rows": (True, False),
            }
        return {
            "ch_per_block": (1, 2, 4, 8, 16),
            "tile_h": (1, 2, 4, 8, 16),
            "tile_w": (4, 8, 16, 32),
            "out_h": (1, 2, 4),
            "out_w": (1, 2, 4, 8),
            "vec": _vector_widths(problem),
            "stage_input": (False, True),
            "unroll_rows": (True, False),
        }

    def check(self, problem, cfg) -> str | None:
        reason = _check_tile(problem, cfg, min(self.space(problem)["tile_w"]))
        if reason:
            return reason
        k, s, item = problem.k, problem.stride, problem.itemsize
        vec, cpb = cfg["vec"], cfg["ch_per_block"]
        win_w = (cfg["out_w"] - 1) * s + k
        rows = (cfg["out_h"] - 1) * s + k if cfg["unroll_rows"] else 2
        in_h, in_w = (cfg["tile_h"] - 1) * s + k, (cfg["tile_w"] - 1) * s + k
        if self.layout == "nhwc":
            reason = _check_channel_block(problem, vec, cpb)
            if reason:
                return reason
            if cfg["adjacent_cols"] and cfg["out_w"] == 1:
                return "adjacent_cols needs out_w > 1"     # keeps duplicates out of the space
            threads = cpb // vec * (cfg["tile_w"] // cfg["out_w"]) * (cfg["tile_h"] // cfg["out_h"])
            weights_direct = self._weights_in_registers(problem, cfg) and not cfg["stage_input"]
            shared = (0 if weights_direct else 4 * k * k * cpb) + (in_h * in_w * cpb * item if cfg["stage_input"] else 0)
            # accumulators, the input rows in flight (unrolled, later rows' loads run ahead), the bias
            row_cols = (cfg["out_w"] - 1) * s + k if cfg["adjacent_cols"] else cfg["out_w"] * k
            # Staged rows come from shared memory close to their use: about k // 2 rows are live at
            # once for 3x3 kernels, k - 1 for wider ones (fitted to ptxas on sm_80/sm_90), far fewer
            # than global loads hoisted ahead.
            in_flight = (k // 2 if k <= 3 else k - 1) if cfg["stage_input"] else _rows_in_flight(rows)
            arrays = (cfg["out_h"] * cfg["out_w"] + in_flight * row_cols + 1) * vec
            if self._weights_in_registers(problem, cfg):
                arrays += k * k * vec
        else:
            if cpb > _next_pow2(problem.C):
                return "ch_per_block larger than the channel count"
            if cfg["stage_input"]:
                if problem.W % vec or (cfg["tile_w"] * s) % vec:
                    return f"vec={vec} does not divide W={problem.W} and tile_w*stride"
            elif vec != 1:
                return "vec only applies to staged loads"     # keeps duplicates out of the space
            if cfg["out_w"] * item > 16 and self._store_packed(problem, cfg):
                return "packed store wider than 16 bytes"
            threads = cpb * (cfg["tile_w"] // cfg["out_w"]) * (cfg["tile_h"] // cfg["out_h"])
            lead = ceil_div(problem.padding, vec) * vec
            staged_w = ceil_div(in_w - problem.padding + lead, vec) * vec
            shared = cpb * in_h * staged_w * item if cfg["stage_input"] else 0
            arrays = cfg["out_h"] * cfg["out_w"] + _rows_in_flight(rows) * win_w + k * k
        registers = arrays + _REGISTER_OVERHEAD
        return resource_violation(threads, shared, registers)

    @staticmethod
    def _weights_in_registers(problem, cfg) -> bool:
        return cfg["unroll_rows"] and problem.k * problem.k * cfg["vec"] <= _MAX_WEIGHT_REGISTERS

    @staticmethod
    def _store_packed(problem, cfg) -> bool:
        return cfg["out_w"] > 1 and problem.W_out % cfg["out_w"] == 0

    def default_config(self, problem) -> dict:
        """The narrower searched vector and a modest block that fits any problem: valid everywhere, fast nowhere."""
        if self.layout == "nhwc":
            return {"vec": _nhwc_vector_widths(problem)[-1], "ch_per_block": min(32, max(8, _next_pow2(problem.C))),
                    "tile_h": min(2, _next_pow2(problem.H_out)), "tile_w": min(4, _next_pow2(problem.W_out)),
                    "out_h": 1, "out_w": 1, "adjacent_cols": False, "stage_input": False, "unroll_rows": True}
        return {"ch_per_block": 1, "tile_h": 1, "tile_w": min(32, max(4, _next_pow2(problem.W_out))),
                "out_h": 1, "out_w": 1, "vec": 1, "stage_input": False, "unroll_rows": True}

    # ---- code generation and launch -----------------------------------------------------------
    def template_params(self, problem, cfg) -> dict:
        params = {
            "VEC": cfg["vec"], "CH_PER_BLOCK": cfg["ch_per_block"],
            "TILE_H": cfg["tile_h"], "TILE_W": cfg["tile_w"],
            "OUT_H": cfg["out_h"], "OUT_W": cfg["out_w"],
            "STAGE_INPUT": cfg["stage_input"], "UNROLL_ROWS": "" if cfg["unroll_rows"] else "1",
        }
        if self.layout == "nchw":
            params["STORE_PACKED"] = self._store_packed(problem, cfg)
        else:
            params["WEIGHTS_IN_REGS"] = self._weights_in_registers(problem, cfg)
            params["ADJACENT"] = cfg["adjacent_cols"]
        return params

    def divisors(self, problem, cfg) -> dict:
        if self.layout == "nhwc":
            return {"C": cfg["vec"]}
        out = {"W": cfg["vec"]} if cfg["stage_input"] else {}
        if self._store_packed(problem, cfg):         # compiled in for this W_out
            out["W_out"] = cfg["out_w"]
        return out

    def launch(self, problem, cfg) -> Launch:
        per_c = cfg["ch_per_block"] // cfg["vec"] if self.layout == "nhwc" else cfg["ch_per_block"]
        threads = per_c * (cfg["tile_w"] // cfg["out_w"]) * (cfg["tile_h"] // cfg["out_h"])
        return Launch(grid=tile_grid(problem, cfg["tile_h"], cfg["tile_w"], cfg["ch_per_block"]),
                      block=(threads, 1, 1), shared_mem=0)


class TensorCoreDepthwise:
    """fp16 NHWC depthwise on tensor cores (templates/depthwise_nhwc_tc.cu.j2): each mma.sync computes
    16 pixels x 8 channels over two taps with a block-diagonal weight operand."""
    name = "depthwise_nhwc_tc"
    layout = "nhwc"
    template = "depthwise_nhwc_tc.cu.j2"
    entry = "dw_conv2d"

    def applies(self, problem) -> bool:
        return problem.op == "dw" and problem.layout == "nhwc" and problem.dtype == "float16" and problem.C % 8 == 0

    def space(self, problem) -> dict:
        return {"tile_h": (1, 2, 4, 8, 16), "tile_w": (4, 8, 16, 32), "ch_per_block": (8, 16, 32, 64),
                "warps": (1, 2, 4, 8)}

    def _pixel_stride(self, cfg) -> int:
        cpb = cfg["ch_per_block"]
        return cpb if (cpb // 8) % 2 else cpb + 8

    def check(self, problem, cfg) -> str | None:
        if not self.applies(problem):
            return "the tensor-core depthwise kernel needs float16 NHWC with C a multiple of 8"
        if cfg["tile_h"] * cfg["tile_w"] % 16:
            return "tile_h * tile_w must be whole groups of 16 pixels"
        if cfg["ch_per_block"] > max(8, _next_pow2(problem.C)):
            return "ch_per_block larger than the channel count"
        if cfg["tile_h"] > max(1, _next_pow2(problem.H_out)) or \
                cfg["tile_w"] > max(16 // cfg["tile_h"], 4, _next_pow2(problem.W_out)):
            return "tile larger than the output"
        items = cfg["tile_h"] * cfg["tile_w"] // 16 * cfg["ch_per_block"] // 8
        if cfg["warps"] > items:
            return f"{cfg['warps']} warps for {items} work items"
        k, s = problem.k, problem.stride
        in_h, in_w = (cfg["tile_h"] - 1) * s + k, (cfg["tile_w"] - 1) * s + k
        cpb = cfg["ch_per_block"]
        tiles = in_h * in_w * self._pixel_stride(cfg) + cfg["tile_h"] * cfg["tile_w"] * (cpb + 8)
        shared = (tiles + cpb * problem.k * problem.k) * 2 + 4 * cpb     # halves, then the float biases
        k_steps = (k * k + 1) // 2
        return resource_violation(32 * cfg["warps"], shared, 2 * k_steps + _REGISTER_OVERHEAD + 24)

    def default_config(self, problem) -> dict:
        return {"tile_h": 1, "tile_w": 16, "ch_per_block": 8, "warps": 1}   # one warp, 16 pixels x 8 channels

    def template_params(self, problem, cfg) -> dict:
        return {"TILE_H": cfg["tile_h"], "TILE_W": cfg["tile_w"], "CH_PER_BLOCK": cfg["ch_per_block"],
                "WARPS": cfg["warps"]}

    def divisors(self, problem, cfg) -> dict:
        return {"C": 8}

    def launch(self, problem, cfg) -> Launch:
        return Launch(grid=tile_grid(problem, cfg["tile_h"], cfg["tile_w"], cfg["ch_per_block"]),
                      block=(32 * cfg["warps"], 1, 1), shared_mem=0)


class StreamingDepthwise:
    """NHWC depthwise that walks a strip of output rows per block, its input rows streamed through a
    cp.async ring in shared memory (templates/depthwise_nhwc_stream.cu.j2): loads run DEPTH steps
    ahead without holding registers, and rows shared by consecutive steps are read once."""
    name = "depthwise_nhwc_stream"
    layout = "nhwc"
    template = "depthwise_nhwc_stream.cu.j2"
    entry = "dw_conv2d"

    def applies(self, problem) -> bool:
        return problem.op == "dw" and problem.layout == "nhwc"

    def space(self, problem) -> dict:
        # Besides powers of two, blocks that split C and W_out exactly: idle lanes of a partial
        # block still issue every instruction (a 32 x 32 block on C=144, W=56 wastes 27%).
        # Left out after three random explorations of MobileNetV2's 20 fp16 layers on the H100
        # (~7,200 measurements): of the 353 configurations within 5% of their layer's best, 5 had 4
        # columns per thread, 1 a strip of 32 rows, 4 blocks over 64 channels, none over 64 columns.
        exact_c = {problem.C // d for d in (1, 2, 4) if problem.C % (8 * d) == 0 and problem.C // d <= 64}
        exact_w = {ceil_div(problem.W_out, d) for d in (1, 2) if ceil_div(problem.W_out, d) <= 64}
        return {
            "vec": _nhwc_vector_widths(problem),
            "ch_per_block": tuple(sorted({8, 16, 32, 64} | exact_c)),
            "tile_w": tuple(sorted({8, 16, 32, 64} | exact_w)),
            "out_h": (1, 2, 4),
            "out_w": (1, 2),
            "strip": (1, 2, 4, 8, 16),      # 1 and 2: more blocks for small batch-1 layers
            "depth": (1, 2, 3),
        }

    @staticmethod
    def _weights_in_registers(problem, cfg) -> bool:
        return problem.k * problem.k * cfg["vec"] <= _MAX_WEIGHT_REGISTERS

    @staticmethod
    def ring_bytes(problem, cfg) -> int:
        """Shared memory of the input ring: (window + (depth + 1) steps) rows of the block's columns,
        but no more than a strip's rows, each row padded to whole groups of out_w * stride columns
        (the bank-conflict-free order)."""
        k, s = problem.k, problem.stride
        window = (cfg["out_h"] - 1) * s + k
        slots = min(window + (cfg["depth"] + 1) * cfg["out_h"] * s, (cfg["strip"] - 1) * s + k)
        m = cfg["out_w"] * s
        in_w = (cfg["tile_w"] - 1) * s + k
        return slots * ceil_div(in_w, m) * m * cfg["ch_per_block"] * problem.itemsize

    def check(self, problem, cfg) -> str | None:
        k, s, vec, cpb = problem.k, problem.stride, cfg["vec"], cfg["ch_per_block"]
        reason = _check_channel_block(problem, vec, cpb)
        if reason:
            return reason
        if cfg["tile_w"] % cfg["out_w"]:
            return "tile_w not divisible by out_w"
        if cfg["tile_w"] > max(8, _next_pow2(problem.W_out)):
            return "tile larger than the output"
        if cfg["strip"] % cfg["out_h"]:
            return "strip not divisible by out_h"
        if cfg["strip"] > max(4, cfg["out_h"], _next_pow2(problem.H_out)):
            return "strip longer than the output"
        threads = cpb // vec * cfg["tile_w"] // cfg["out_w"]
        weights_in_regs = self._weights_in_registers(problem, cfg)
        shared = self.ring_bytes(problem, cfg) + (0 if weights_in_regs else 4 * k * k * cpb)
        # Accumulators, k window rows live at once, the bias: fitted to ptxas on sm_90 (438 sampled
        # configurations, 11 under-estimated by more than 8 registers, at most by 44).
        row_cols = (cfg["out_w"] - 1) * s + k
        arrays = (cfg["out_h"] * cfg["out_w"] + k * row_cols + 1) * vec
        if weights_in_regs:
            arrays += k * k * vec
        return resource_violation(threads, shared, arrays + _REGISTER_OVERHEAD)

    def default_config(self, problem) -> dict:
        """A 2x2 output patch per thread at stride 1 (one output at stride 2) and one step in flight,
        which ranked near the top on MobileNetV2's fp16 layers (H100); smaller blocks, patches and
        vectors where that does not fit (wide kernels with stride 2 need many rows of many columns)."""
        widths = _nhwc_vector_widths(problem)
        patches = (2, 1) if problem.stride == 1 else (1,)
        for vec, (cpb, tile_w), patch in itertools.product(sorted(widths, key=lambda v: v != 4),
                                                           ((32, 16), (16, 16), (8, 8)), patches):
            config = {"vec": vec, "ch_per_block": min(cpb, max(8, _next_pow2(problem.C))),
                      "tile_w": min(tile_w, max(8, _next_pow2(problem.W_out))), "out_h": patch, "out_w": patch,
                      "strip": min(16, max(4, _next_pow2(problem.H_out))), "depth": 1}
            if self.check(problem, config) is None:
                return config
        raise AssertionError(f"{self.name}: no default configuration fits {problem.key}")  # check() bug

    def template_params(self, problem, cfg) -> dict:
        return {"VEC": cfg["vec"], "CH_PER_BLOCK": cfg["ch_per_block"], "TILE_W": cfg["tile_w"],
                "OUT_H": cfg["out_h"], "OUT_W": cfg["out_w"], "STRIP": cfg["strip"], "DEPTH": cfg["depth"],
                "WEIGHTS_IN_REGS": self._weights_in_registers(problem, cfg), "PROJECT": False,
                "HALF_MATH": False}

    def divisors(self, problem, cfg) -> dict:
        return {"C": cfg["vec"]}

    def launch(self, problem, cfg) -> Launch:
        threads = cfg["ch_per_block"] // cfg["vec"] * cfg["tile_w"] // cfg["out_w"]
        return Launch(grid=tile_grid(problem, cfg["strip"], cfg["tile_w"], cfg["ch_per_block"]),
                      block=(threads, 1, 1), shared_mem=0)


NHWC = DepthwiseFamily("nhwc")
NCHW = DepthwiseFamily("nchw")
NHWC_TC = TensorCoreDepthwise()
NHWC_STREAM = StreamingDepthwise()
FAMILIES = [NHWC, NCHW, NHWC_TC, NHWC_STREAM]
