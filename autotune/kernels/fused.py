"""Fused-block families. templates/fused_block.cu.j2: a dwpw block or a whole inverted residual in one
kernel, on CUDA cores (fp32 math, both dtypes) or with the 1x1s on tensor cores (fp16); also pwdw
where ExpandDepthwise does not run it (fp32, NCHW). templates/expand_depthwise.cu.j2: an expand 1x1
and its depthwise (pwdw), fp16 NHWC (ExpandDepthwise).

A block owns tile_h x tile_w output pixels and block_n output channels and walks the hidden channels
kc at a time; the 1x1's accumulators live in registers across the walk. Output channels beyond
block_n go to other blocks, which recompute the expand and depthwise: block_n covering all of C_out
avoids that and costs registers.
"""
from __future__ import annotations

import numpy as np

from ..problem import FUSED_OPS
from ..reference import activate
from ..searchspace import space_violation
from . import (MAX_SHARED_BYTES, MAX_SHARED_PER_SM, REGISTERS_PER_SM, Launch, ceil_div, clustered, depthwise,
               idle_in_cluster, resource_violation, tile_grid)

_TILES = ((1, 16), (2, 8), (4, 4), (2, 16), (4, 8), (8, 4), (4, 16), (8, 8), (16, 8), (8, 16))
_REGISTER_OVERHEAD = 40     # indices, pointers, the depthwise's and epilogue's temporaries


def _round_up(a: int, b: int) -> int:
    return ceil_div(a, b) * b


def copy_width(problem) -> int:
    """Elements per copy of x into shared memory: up to 16 bytes along NHWC channels; NCHW copies
    single elements (its channels are planes apart)."""
    if problem.layout == "nchw":
        return 1
    return next(v for v in (16 // problem.itemsize, 4, 2, 1) if problem.C % v == 0 and v * problem.itemsize <= 16)


def weight_copy_width(problem, tensor_cores: bool) -> int:
    """Elements per asynchronous copy of a chunk's weights (tensor cores, fp16): 8 (16 bytes) when
    every weight row and every stage's offset in the flat weights is a whole number of them; 1 means
    no double buffering."""
    return 8 if tensor_cores and problem.hidden % 8 == 0 and problem.C % 8 == 0 else 1


class _FusedBlock:
    exact_channels = True     # compiled for its channel counts
    template = "fused_block.cu.j2"
    entry = "fused_block"
    tensor_cores = False
    thread_params: tuple = ()     # how a family lays threads over the block's outputs (template constants)

    def applies(self, problem) -> bool:
        """A fused block whose smallest tiles fit in shared memory (the expand stages the input tile
        with all its channels: wide fp32 blocks do not fit and run unfused); pwdw only where the
        tensor-core ExpandDepthwise does not run it."""
        if problem.op == "pwdw" and EXPAND_DEPTHWISE.applies(problem):
            return False
        smallest = {"tile": "4x4", "kc": 16, "block_n": 16}
        return problem.op in FUSED_OPS and self.shared_bytes(problem, smallest) <= MAX_SHARED_BYTES

    # ---- shared pieces --------------------------------------------------------------------------
    def _tile_space(self):
        return {"tile": tuple(f"{h}x{w}" for h, w in _TILES), "kc": (16, 32, 64),
                "block_n": (16, 32, 64, 128, 256, 512)}

    @staticmethod
    def tile(config) -> tuple:
        h, w = config["tile"].split("x")
        return int(h), int(w)

    def _row_pads(self, problem):
        """Padding (elements) of the rows of the staged tiles and of the GEMM operand tiles."""
        return (8, 8) if self.tensor_cores else (16 // problem.itemsize, 16 // problem.itemsize)

    def shared_bytes(self, problem, config) -> int:
        th, tw = self.tile(config)
        kc, bn, item, k, s = config["kc"], config["block_n"], problem.itemsize, problem.k, problem.stride
        row_pad, op_pad = self._row_pads(problem)
        in_pix = ((th - 1) * s + k) * ((tw - 1) * s + k)
        in_rows = _round_up(in_pix, 16)
        expand = problem.op == "ir" and problem.expansion > 1 or problem.op == "pwdw"
        project = problem.op != "pwdw"
        x_ld = _round_up(problem.C, 16) + row_pad
        bufs = 2 if weight_copy_width(problem, self.tensor_cores) > 1 else 1
        tiles = [in_rows * (kc + row_pad)] * (1 if expand else bufs) + [th * tw * (kc + op_pad) if project else 1]
        tiles += [bn * (kc + op_pad) if project else 1] * bufs
        tiles += [in_rows * x_ld] + [kc * x_ld] * bufs if expand else [1] * (1 + bufs)
        # each tile starts 16-byte aligned (struct Smem in the template); then two ChunkParams (floats:
        # depthwise weights, expand and depthwise biases)
        return sum(_round_up(n * item, 16) for n in tiles) + 2 * 4 * (k * k + 2) * kc

    def check(self, problem, config) -> str | None:
        return self._check_space(problem, config) or self._check_tiling(config) or \
            self._check_common(problem, config)

    def _param_registers(self, problem, config) -> int:
        """The next chunk's depthwise weights and biases, held in registers while this chunk computes."""
        threads = self.threads(problem, config)
        return ceil_div(config["kc"] * problem.k * problem.k, threads) + ceil_div(2 * config["kc"], threads)

    def _check_space(self, problem, config) -> str | None:
        if not self.applies(problem):
            return f"{self.name} runs fused blocks (dwpw, ir)" + (" in float16" if self.tensor_cores else "")
        return space_violation(self.space(problem), config)

    def _check_common(self, problem, config) -> str | None:
        th, tw = self.tile(config)
        if th > max(1, 2 * problem.H_out) or tw > max(16, 2 * problem.W_out):
            return "tile far larger than the output (pruned)"
        if config["block_n"] > max(16, _round_up(problem.C_out, 16)) * 2 - 16:
            return f"block_n={config['block_n']} beyond C_out={problem.C_out} (pruned)"
        if config["kc"] > max(16, _round_up(problem.hidden, 16)):
            return f"kc={config['kc']} beyond the {problem.hidden} hidden channels (pruned)"
        if config["kc"] % copy_width(problem):
            return "kc must be whole copies"
        if problem.op == "pwdw" and config["block_n"] % config["kc"]:
            return "pwdw: a block's output channels must be whole chunks of kc"
        return resource_violation(self.threads(problem, config), self.shared_bytes(problem, config),
                                  self.registers(problem, config), min_threads=32)

    def default_config(self, problem) -> dict:
        for config in self._default_candidates():
            if self.check(problem, config) is None:
                return config
        raise AssertionError(f"{self.name}: no default configuration fits {problem.key}")  # a check() bug

    def _default_candidates(self):
        for bn in (64, 32, 16):
            for tile in ("4x4", "2x8", "1x16"):
                for kc in (32, 16):
                    yield {"tile": tile, "kc": kc, "block_n": bn, **self._default_threads(bn)}

    def _check_tiling(self, config) -> str | None:
        return None

    def template_params(self, problem, config) -> dict:
        th, tw = self.tile(config)
        return {"TILE_H": th, "TILE_W": tw, "KC": config["kc"], "BLOCK_N": config["block_n"],
                "CIN_PAD": _round_up(problem.C, 16), "VEC": copy_width(problem),
                "EXPANSION": problem.expansion, "RESIDUAL": problem.residual, "PROJECT": problem.op != "pwdw",
                "WEIGHT_VEC": weight_copy_width(problem, self.tensor_cores),
                "TENSOR_CORES": self.tensor_cores, "CLUSTER_K": config.get("cluster_k", 1),
                **{name.upper(): config[name] for name in self.thread_params}}

    def divisors(self, problem, config) -> dict:
        return {}       # compiled for its channel counts: reused only for exactly those (see exporters)

    def launch(self, problem, config) -> Launch:
        return Launch(grid=tile_grid(problem, *self.tile(config), config["block_n"], problem.C_out),
                      block=(self.threads(problem, config), 1, 1), shared_mem=0)


class SimtFusedBlock(_FusedBlock):
    """Every stage on CUDA cores in fp32; tm x tn outputs of the last 1x1 per thread."""
    name = "fused_block"
    thread_params = ("tm", "tn")

    def space(self, problem) -> dict:
        return {**self._tile_space(), "tm": (1, 2, 4, 8), "tn": (1, 2, 4, 8)}

    def threads(self, problem, config) -> int:
        th, tw = self.tile(config)
        return th * tw // config["tm"] * config["block_n"] // config["tn"]

    def registers(self, problem, config) -> int:
        tm, tn = config["tm"], config["tn"]
        return tm * tn + tm + tn + self._param_registers(problem, config) + _REGISTER_OVERHEAD

    # (_check_tiling: tiles are whole multiples of 16 pixels and 16 channels, tm and tn at most 8)

    @staticmethod
    def _default_threads(block_n) -> dict:
        return {"tm": 2, "tn": min(4, block_n // 16)}


class TensorCoreFusedBlock(_FusedBlock):
    """fp16: the 1x1s on tensor cores (mma.sync m16n8k16, fp32 accumulation), warps_m x warps_n warps
    over the block's pixels x output channels; the depthwise on CUDA cores."""
    name = "fused_block_tc"
    tensor_cores = True
    thread_params = ("warps_m", "warps_n")

    def applies(self, problem) -> bool:
        return problem.dtype == "float16" and super().applies(problem)

    def space(self, problem) -> dict:
        return {**self._tile_space(), "warps_m": (1, 2, 4), "warps_n": (1, 2, 4, 8)}

    def threads(self, problem, config) -> int:
        return 32 * config["warps_m"] * config["warps_n"]

    def registers(self, problem, config) -> int:
        th, tw = self.tile(config)
        mt = th * tw // config["warps_m"] // 16
        nt = config["block_n"] // config["warps_n"] // 8
        # accumulators + A and B fragments + the next chunk's parameters
        return 4 * mt * nt + 4 * mt + 2 * nt + self._param_registers(problem, config) + _REGISTER_OVERHEAD

    def _check_tiling(self, config) -> str | None:
        th, tw = self.tile(config)
        if th * tw % (16 * config["warps_m"]):
            return f"tile {config['tile']} is not warps_m={config['warps_m']} whole 16-pixel tiles"
        if config["block_n"] % (8 * config["warps_n"]):
            return f"block_n={config['block_n']} is not warps_n={config['warps_n']} whole 8-channel tiles"
        return None

    @staticmethod
    def _default_threads(block_n) -> dict:
        return {"warps_m": 1, "warps_n": max(1, block_n // 32)}


class ClusterFusedBlock(TensorCoreFusedBlock):
    """The tensor-core fused block with the hidden channels split across the cluster_k blocks of a
    thread-block cluster (sm_90+).

    Deep blocks (14x14, 7x7) have few output tiles and many hidden channels: one block per tile walks
    them all in series. Here each block of a cluster takes a contiguous share of the chunks for the same
    tile, and the partial projections are added through distributed shared memory, each block finishing
    1/cluster_k of the tile's pixels (bias, act2, residual, store)."""
    name = "fused_block_tc_cluster"
    min_sm = 90     # (every tile's pixel count is a multiple of 8: each block finishes as many pixels)

    def space(self, problem) -> dict:
        return {**super().space(problem), "cluster_k": (2, 4, 8)}

    def shared_bytes(self, problem, config) -> int:
        th, tw = self.tile(config)
        partial_tiles = th * tw * (config["block_n"] + 4) * 4
        return max(super().shared_bytes(problem, config), partial_tiles)

    def check(self, problem, config) -> str | None:
        reason = super().check(problem, config)
        if reason:
            return reason
        chunks = ceil_div(problem.hidden, config["kc"])
        if idle_in_cluster(chunks, config["cluster_k"]):
            return f"cluster_k={config['cluster_k']} blocks for {chunks} hidden chunks leave some idle"
        return None

    def applies(self, problem) -> bool:
        return super().applies(problem) and problem.op != "pwdw" and problem.hidden >= 32   # two chunks of 16 to share

    def _default_candidates(self):
        for cluster_k in (2, 4, 8):
            for candidate in super()._default_candidates():
                yield {**candidate, "cluster_k": cluster_k}

    def launch(self, problem, config) -> Launch:
        return clustered(super().launch(problem, config), config["cluster_k"])


class ExpandDepthwise:
    """pwdw in one kernel: a block expands its x tile (halo included) on tensor cores into a hidden
    tile in shared memory and runs the depthwise from it, for block_n of the hidden channels and a
    tile_h x tile_w tile of output pixels. Hidden channels need nothing from each other after the
    expand, so the blocks over them share no partial sums: every block is independent, and only the
    depthwise's output (at its stride) goes to memory. fp16 NHWC; C_out (the hidden channels) a
    multiple of 8, for 16-byte stores."""
    name = "expand_depthwise_tc"
    template = "expand_depthwise.cu.j2"
    entry = "expand_depthwise"
    exact_channels = True          # compiled for C (the expand's K); C_out is a runtime size
    MAX_SHARED = 96 * 1024         # dynamic, opted in to: fits sm_80's and sm_86's limits too
    TILES = ("2x8", "4x4", "4x8", "8x4", "8x8", "7x7", "4x16", "8x16", "16x8", "14x14", "16x16")

    SMALLEST = {"tile": "4x4", "block_n": 16, "warps": 2, "dw_vec": 2, "rows": 1, "hidden_float": 0}
    tile = staticmethod(_FusedBlock.tile)       # "8x16" -> (8, 16)

    def applies(self, problem) -> bool:
        return (problem.op == "pwdw" and problem.dtype == "float16" and problem.layout == "nhwc"
                and problem.C_out % 8 == 0 and self._resources(problem, self.SMALLEST) is None)

    def space(self, problem) -> dict:
        return {"tile": self.TILES, "block_n": (16, 32, 48, 64, 96, 128), "warps": (2, 4, 8),
                "dw_vec": (2, 4, 8), "rows": (1, 2, 4), "hidden_float": (0, 1)}

    def threads(self, problem, config) -> int:
        return 32 * config["warps"]

    def registers(self, problem, config) -> int:
        """The larger of the expand's (weight fragments of all input channels, accumulators) and the
        depthwise's (taps, accumulators, one loaded pack), plus indices and pointers (checked against
        ptxas by tests/test_fused_compile.py)."""
        vec = config["dw_vec"]
        expand = _round_up(problem.C, 16) // 4 + 16
        return max(expand, (problem.k * problem.k + config["rows"] + 2) * vec) + 48

    def shared_bytes(self, problem, config) -> int:
        """The template's layout (it asserts the same sum): x tile (whole 16-pixel tiles, rows padded
        by 8 halves), expand weights, the hidden tile (halves or floats, rows padded by 16 bytes), then
        depthwise weights and both biases as floats, a flag per tile pixel."""
        th, tw = self.tile(config)
        bn, k, s = config["block_n"], problem.k, problem.stride
        rows = _round_up(((th - 1) * s + k) * ((tw - 1) * s + k), 16)
        x_ld = _round_up(problem.C, 16) + 8
        h_bytes = 4 if config["hidden_float"] else 2
        return 2 * (rows * x_ld + bn * x_ld) + rows * (bn * h_bytes + 16) + 4 * bn * (k * k + 2) + 4 * ceil_div(rows, 32)

    def check(self, problem, config) -> str | None:
        if not self.applies(problem):
            return f"{self.name} runs pwdw blocks in float16 NHWC with C_out a multiple of 8"
        reason = space_violation(self.space(problem), config)
        if reason:
            return reason
        th, tw = self.tile(config)
        if th % config["rows"]:
            return f"tile {config['tile']} is not whole strips of rows={config['rows']}"
        if th > max(4, 2 * problem.H_out) or tw > max(8, 2 * problem.W_out):
            return "tile far larger than the output (pruned)"
        if config["block_n"] > _round_up(problem.C_out, 16) * 2 - 16 and config["block_n"] > 16:
            return f"block_n={config['block_n']} beyond C_out={problem.C_out} (pruned)"
        return self._resources(problem, config)

    def _resources(self, problem, config) -> str | None:
        return resource_violation(self.threads(problem, config), self.shared_bytes(problem, config),
                                  self.registers(problem, config), max_shared=self.MAX_SHARED)

    def default_config(self, problem) -> dict:
        for dw_vec, rows in ((8, 2), (4, 1), (2, 1)):          # (fewer taps in registers for k5, k7)
            for block_n in (32, 16):
                for tile in ("8x8", "4x8", "4x4"):
                    config = {"tile": tile, "block_n": block_n, "warps": 4, "dw_vec": dw_vec, "rows": rows,
                              "hidden_float": 0}
                    if self.check(problem, config) is None:
                        return config
        raise AssertionError(f"{self.name}: no default configuration fits {problem.key}")  # a check() bug

    def template_params(self, problem, config) -> dict:
        th, tw = self.tile(config)
        return {"TILE_H": th, "TILE_W": tw, "BLOCK_N": config["block_n"], "WARPS": config["warps"],
                "DW_VEC": config["dw_vec"], "ROWS": config["rows"], "HIDDEN_FLOAT": bool(config["hidden_float"]),
                "C_IN": problem.C, "VEC": copy_width(problem), "SHARED_BYTES": self.shared_bytes(problem, config)}

    def divisors(self, problem, config) -> dict:
        return {}       # compiled for its input channel count: reused only for exactly that

    def launch(self, problem, config) -> Launch:
        return Launch(grid=tile_grid(problem, *self.tile(config), config["block_n"], problem.C_out),
                      block=(self.threads(problem, config), 1, 1), shared_mem=self.shared_bytes(problem, config))


class StreamingDepthwiseProject:
    """dwpw (or an inverted residual without expand or residual) in one kernel: the streaming depthwise
    (templates/depthwise_nhwc_stream.cu.j2) over all C channels of a strip of rows, each step's outputs
    projected from shared memory on tensor cores. Where C is small the block's x window is a few KB, so
    the depthwise streams x at close to the copy bandwidth and the projection adds no memory traffic.
    fp16 NHWC; C a multiple of 16, C_out of 8. Its parameters are the streaming depthwise's, less the
    channel block (all of C), plus `math`: the depthwise in fp32 (window values converted, as the
    depthwise families do) or in fp16 (HFMA2 on channel pairs: half the FMAs, no conversions; verified
    at the same fp16 tolerance), and `n_group`: the projection's n8 tiles per task (sharing each A
    fragment and the store's index math; more registers)."""
    name = "dwpw_stream_tc"
    template = "depthwise_nhwc_stream.cu.j2"
    entry = "dwpw_stream"
    exact_channels = True          # compiled for C and C_out
    min_sm = 80

    def applies(self, problem) -> bool:
        block = problem.op == "dwpw" or problem.op == "ir" and problem.expansion == 1 and not problem.residual
        return (block and problem.dtype == "float16" and problem.layout == "nhwc" and problem.C % 16 == 0
                and problem.C_out % 8 == 0 and self._fits(problem, self.default_config(problem, checked=False)) is None)

    def space(self, problem) -> dict:
        stream = depthwise.NHWC_STREAM.space(problem.stages()[0])
        return {"vec": stream["vec"], "tile_w": stream["tile_w"], "out_h": (1, 2, 4), "out_w": (1, 2),
                "strip": (2, 4, 8, 16), "depth": (1, 2), "math": ("fp32", "fp16"), "n_group": (1, 2, 3, 4)}

    @staticmethod
    def _depthwise(problem, config) -> tuple:
        """The depthwise stage and its streaming configuration (the ring and its checks are shared)."""
        return problem.stages()[0], {**config, "ch_per_block": problem.C}

    def shared_bytes(self, problem, config) -> int:
        """The depthwise's ring (and taps when not in registers), a step's depthwise outputs and the 1x1
        weights, rows padded by 8 halves (the template's arrays)."""
        stage, cfg = self._depthwise(problem, config)
        taps = 0 if depthwise.NHWC_STREAM._weights_in_registers(stage, cfg) else 4 * problem.k ** 2 * problem.C
        rows = config["out_h"] * config["tile_w"] + problem.C_out
        return depthwise.NHWC_STREAM.ring_bytes(stage, cfg) + taps + 2 * rows * (problem.C + 8)

    def threads(self, problem, config) -> int:
        return problem.C // config["vec"] * config["tile_w"] // config["out_w"]

    def check(self, problem, config) -> str | None:
        reason = space_violation(self.space(problem), config)
        return reason or self._fits(problem, config)

    def _fits(self, problem, config) -> str | None:
        if not (problem.C % 16 == 0 and problem.C_out % 8 == 0):
            return f"{self.name} needs C a multiple of 16 and C_out of 8"
        if self.threads(problem, config) % 32:
            return "threads not whole warps (the projection runs warp by warp)"
        if config["out_h"] * config["tile_w"] % 16:
            return "a step's pixels are not whole 16-row mma tiles"
        stage, cfg = self._depthwise(problem, config)
        if problem.C_out // 8 % config["n_group"]:
            return "n_group does not divide the projection's n8 tiles"
        if config["math"] == "fp16" and (config["vec"] % 2 or not depthwise.NHWC_STREAM._weights_in_registers(stage, cfg)):
            return "fp16 math needs channel pairs and the taps in registers (vec even, not too wide)"
        reason = depthwise.NHWC_STREAM.check(stage, cfg)
        # the depthwise's registers, then the shared memory of both stages (static: 48 KB at most)
        return reason or resource_violation(self.threads(problem, config), self.shared_bytes(problem, config), 0)

    def default_config(self, problem, checked: bool = True) -> dict:
        """Four output rows of one column per step on 16 columns, 4 channels per thread, strips of 16
        rows; or the first of smaller ones that fits."""
        candidates = [{"vec": vec, "tile_w": tile_w, "out_h": out_h, "out_w": 1, "strip": strip, "depth": 1,
                       "math": "fp32", "n_group": 1}
                      for strip in (16, 4) for vec in (4, 8, 2) for tile_w in (16, 8, 32) for out_h in (4, 2, 1)]
        for config in candidates:
            if self._fits(problem, config) is None:
                return config
        if checked:
            raise AssertionError(f"{self.name}: no default configuration fits {problem.key}")  # a check() bug
        return candidates[0]

    def template_params(self, problem, config) -> dict:
        stage, cfg = self._depthwise(problem, config)
        return {**depthwise.NHWC_STREAM.template_params(stage, cfg), "PROJECT": True, "C_OUT": problem.C_out,
                "N_GROUP": config["n_group"], "HALF_MATH": config["math"] == "fp16"}

    def divisors(self, problem, config) -> dict:
        return {}       # compiled for its channel counts: reused only for exactly those

    def launch(self, problem, config) -> Launch:
        return Launch(grid=tile_grid(problem, config["strip"], config["tile_w"], problem.C),
                      block=(self.threads(problem, config), 1, 1), shared_mem=0)


def _odd_units(halves: int) -> int:
    """A row stride in halves of an odd number of 16-byte units (odd_units in ir_staging.cuh)."""
    return halves if halves // 8 % 2 else halves + 8


def _expand_k(problem) -> int:
    """The whole-block expand's k: C, the ones channel, zeros to whole k8 steps (expand_k there)."""
    return _round_up(problem.C + 1, 8)


def _zero_at_zero(act: str) -> bool:
    """Whether act(0) == 0: the whole-block kernels expand padding pixels (zero input, zero ones
    channel) to act(0) and need it to be the depthwise's zero padding."""
    return activate(np.zeros(1), act)[0] == 0.0


class _WholeInvertedResidual:
    """What the one-kernel inverted residuals with an expand share (fp16 NHWC, tensor cores): compiled
    for the block's channel counts, one block per output tile (or strip), dynamic shared memory opted in
    to, and the checks of resources and of blocks per SM. Subclasses give the space, the layout and
    `_default_candidates` (most preferred first) and `_rows` (the config key of a block's output rows)."""
    exact_channels = True          # compiled for C, the hidden channels and C_out
    min_sm = 80
    MAX_SHARED = 96 * 1024         # dynamic, opted in to: fits sm_80's and sm_86's limits too
    _rows = "out_h"

    def applies(self, problem) -> bool:
        return (problem.op == "ir" and problem.expansion > 1 and problem.dtype == "float16"
                and problem.layout == "nhwc" and problem.hidden % 16 == 0 and problem.C_out % 8 == 0
                and _zero_at_zero(problem.act)
                and any(self.check(problem, c) is None for c in self._default_candidates(problem)))

    def _resource_violation(self, problem, config) -> str | None:
        if config["min_blocks"] * (self.shared_bytes(problem, config) + 1024) > MAX_SHARED_PER_SM:
            return f"{config['min_blocks']} blocks of this shared memory do not fit an SM"
        return resource_violation(self.threads(problem, config), self.shared_bytes(problem, config),
                                  self.registers(problem, config), max_shared=self.MAX_SHARED)

    def _register_cap(self, problem, config) -> int:
        """What `min_blocks` leaves a thread: under it ptxas spills what does not fit (the runner
        rejects heavy spills)."""
        return REGISTERS_PER_SM // (config["min_blocks"] * self.threads(problem, config)) // 8 * 8

    def default_config(self, problem) -> dict:
        for config in self._default_candidates(problem):
            if self.check(problem, config) is None:
                return config
        raise AssertionError(f"{self.name}: no default configuration fits {problem.key}")  # a check() bug

    def divisors(self, problem, config) -> dict:
        return {}       # compiled for its channel counts: reused only for exactly those

    def launch(self, problem, config) -> Launch:
        return Launch(grid=tile_grid(problem, config[self._rows], config["tile_w"], problem.C_out, problem.C_out),
                      block=(self.threads(problem, config), 1, 1), shared_mem=self.shared_bytes(problem, config))


class InvertedResidualStream(_WholeInvertedResidual):
    """An inverted residual with its expand in one kernel, streaming down strips of rows
    (templates/ir_stream.cu.j2): each step expands the input rows its window adds into a ring of hidden
    rows in shared memory (tensor cores), runs the depthwise from the ring and projects the result
    (tensor cores). Every hidden row is expanded once per strip, so the recomputed halo is only the
    side columns', and only x and y go through memory. fp16 NHWC; the hidden channels a multiple of 16,
    C_out of 8."""
    name = "ir_stream_tc"
    template = "ir_stream.cu.j2"
    entry = "ir_stream"
    _rows = "strip"

    def space(self, problem) -> dict:
        return {"vec": (4, 8), "tile_w": (8, 16, 28, 32), "out_h": (1, 2, 4), "cols": (1, 2, 4, 8, 16), "run": (1, 2),
                "strip": (2, 4, 8, 16, 32), "min_blocks": (1, 2), "ring": ("half", "float")}

    def threads(self, problem, config) -> int:
        return problem.hidden // config["vec"] * config["cols"]

    def registers(self, problem, config) -> int:
        """Taps, accumulators and one loaded pack of the depthwise, plus indices and pointers (checked
        against ptxas by tests/test_fused_compile.py)."""
        need = (problem.k ** 2 + config["out_h"] * config["run"] + 2) * config["vec"] + 84
        return min(need, self._register_cap(problem, config))

    def shared_bytes(self, problem, config) -> int:
        """The template's layout (it asserts the same sum): x rows of the first window (whole 16-pixel
        tiles; C, the ones channel, zeros to whole k8 steps; rows an odd number of 16-byte units), expand
        weights likewise, the ring of hidden rows (fp16 or fp32) and the depthwise tile and project
        weights (rows padded by 8 elements)."""
        k, s, hidden = problem.k, problem.stride, problem.hidden
        in_w = (config["tile_w"] - 1) * s + k
        window = (config["out_h"] - 1) * s + k
        x_ld, h_ld = _odd_units(_expand_k(problem)), hidden + 8
        ring_bytes = window * in_w * h_ld * (4 if config["ring"] == "float" else 2)
        return ring_bytes + 2 * (_round_up(window * in_w, 16) * x_ld + hidden * x_ld
                                 + config["out_h"] * config["tile_w"] * h_ld + problem.C_out * h_ld)

    def check(self, problem, config) -> str | None:
        reason = space_violation(self.space(problem), config)
        if reason:
            return reason
        if problem.hidden % config["vec"] or problem.hidden % 16 or problem.C_out % 8:
            return f"{self.name} needs the hidden channels a multiple of 16 (and of vec), C_out of 8"
        if config["tile_w"] % (config["cols"] * config["run"]):
            return "tile_w not divisible by cols x run"
        if config["out_h"] * config["tile_w"] % 16:
            return "a step's pixels are not whole 16-row mma tiles"
        if config["tile_w"] > max(8, 2 * problem.W_out) or config["strip"] > max(2, 2 * problem.H_out):
            return "tile or strip far larger than the output (pruned)"
        if config["strip"] % config["out_h"]:
            return "strip not divisible by out_h"
        if self.threads(problem, config) % 32:
            return "threads not whole warps (the 1x1s run warp by warp)"
        return self._resource_violation(problem, config)

    @staticmethod
    def _default_candidates(problem):
        """Two output rows per step on 16 columns, 8 hidden channels per thread, strips of 8 rows; then
        smaller ones."""
        return [{"vec": vec, "tile_w": tile_w, "out_h": out_h, "cols": cols, "strip": 8, "min_blocks": 1,
                 "run": 1, "ring": "half"}
                for out_h in (2, 1, 4) for tile_w in (16, 8, 32) for vec in (8, 4) for cols in (8, 16, 4, 2, 1)]

    def template_params(self, problem, config) -> dict:
        return {"TILE_W": config["tile_w"], "OUT_H": config["out_h"], "STRIP": config["strip"], "VEC": config["vec"],
                "COLS": config["cols"], "RUN": config["run"], "MIN_BLOCKS": config["min_blocks"], "C_IN": problem.C,
                "HIDDEN": problem.hidden, "C_OUT": problem.C_out, "RESIDUAL": problem.residual,
                "X_VEC": copy_width(problem), "FLOAT_RING": config["ring"] == "float",
                "SHARED_BYTES": self.shared_bytes(problem, config)}


class InvertedResidualTensorDepthwise(_WholeInvertedResidual):
    """An inverted residual in one kernel with its depthwise on tensor cores too
    (templates/ir_tensor_dw.cu.j2): per hidden channel, 16 segments of 8 output columns times the
    Toeplitz matrix of each kernel row's taps make one m16n8k16 mma (stride 2: one per phase of the
    input columns). The expand runs transposed, so the hidden values sit channel by channel; a block owns
    one output tile and walks the hidden channels in chunks, the projection's accumulators in registers.
    fp16 NHWC; hidden channels a multiple of 16, C_out of 8, (k - 1) / stride at most 8."""
    name = "ir_tensor_dw"
    template = "ir_tensor_dw.cu.j2"
    entry = "ir_tensor_dw"

    def applies(self, problem) -> bool:
        return (problem.op == "ir" and (problem.k - 1) // problem.stride <= 8   # a segment's 16 columns hold its taps
                and super().applies(problem))

    def space(self, problem) -> dict:
        return {"tile_w": (8, 16, 32, 64), "out_h": (2, 4, 8, 16), "hc": (16, 32, 48, 64),
                "warps": (4, 8, 16), "min_blocks": (1, 2)}

    def threads(self, problem, config) -> int:
        return 32 * config["warps"]

    def registers(self, problem, config) -> int:
        """The projection's accumulators (4 per m16 x n8 tile of the warp), the expand's weight
        fragments, plus indices, pointers and fragments in flight."""
        pixels = config["out_h"] * config["tile_w"]
        tiles = ceil_div(pixels // 16 * (problem.C_out // 8), config["warps"])
        need = 4 * tiles + 4 * ceil_div(_expand_k(problem), 16) + 56
        return min(need, self._register_cap(problem, config))

    def shared_bytes(self, problem, config) -> int:
        """The template's layout (it asserts the same sum), row strides an odd number of 16-byte units:
        x over the input region (stride 2: its columns as two phases, each tile_w + 8 wide; C, the ones
        channel, zeros to whole k8 steps), the expand and project weights, the chunk's hidden region
        and depthwise outputs (channel-major) and tap pairs, and the depthwise's biases as floats."""
        k, s, hidden, hc = problem.k, problem.stride, problem.hidden, config["hc"]
        in_h = (config["out_h"] - 1) * s + k
        region_w = _odd_units(s * (config["tile_w"] + 8))
        x_ld, h_ld = _odd_units(_expand_k(problem)), _odd_units(hidden)
        ch_ld, dw_ld = _odd_units(in_h * region_w), _odd_units(config["out_h"] * config["tile_w"])
        pairs = (k - 1) // s + 4
        return (2 * (in_h * region_w * x_ld + hidden * x_ld + problem.C_out * h_ld + hc * ch_ld + hc * dw_ld)
                + _round_up(hc * k * s * pairs * 4, 16) + 4 * hidden)

    def check(self, problem, config) -> str | None:
        reason = space_violation(self.space(problem), config)
        if reason:
            return reason
        if problem.hidden % 16 or problem.C_out % 8 or problem.hidden % config["hc"]:
            return f"{self.name} needs the hidden channels a multiple of 16 and of hc, C_out of 8"
        seg_tiles = config["out_h"] * config["tile_w"] // 128
        if config["out_h"] * config["tile_w"] % 128:
            return "a tile's 8-column segments are not whole m16 tiles (out_h x tile_w a multiple of 128)"
        if config["warps"] % seg_tiles or config["hc"] % (config["warps"] // seg_tiles):
            return "the depthwise's segment tiles and channels do not split evenly over the warps"
        if config["tile_w"] > max(8, 2 * problem.W_out) or config["out_h"] > max(16, 2 * problem.H_out):
            return "tile far larger than the output (pruned)"
        return self._resource_violation(problem, config)

    @staticmethod
    def _default_candidates(problem):
        """4 x 64 tiles, hidden channels 16 at a time, 16 warps (the fastest at 56x56, batch 16); then
        others."""
        return [{"tile_w": tile_w, "out_h": out_h, "hc": hc, "warps": warps, "min_blocks": 1}
                for tile_w, out_h in ((64, 4), (32, 4), (16, 8), (64, 2), (8, 16)) for hc in (16, 32, 48)
                for warps in (16, 8, 4)]

    def template_params(self, problem, config) -> dict:
        return {"TILE_W": config["tile_w"], "OUT_H": config["out_h"], "HC": config["hc"], "WARPS": config["warps"],
                "MIN_BLOCKS": config["min_blocks"], "C_IN": problem.C, "HIDDEN": problem.hidden,
                "C_OUT": problem.C_out, "RESIDUAL": problem.residual, "X_VEC": copy_width(problem),
                "SHARED_BYTES": self.shared_bytes(problem, config)}


class InvertedResidualRegisterDepthwise(_WholeInvertedResidual):
    """An inverted residual in one kernel with the expanded rows kept in registers
    (templates/ir_register_dw.cu.j2): a warp expands a 16-pixel input row for 16 hidden channels
    (transposed mma), takes the one or two pixels its depthwise outputs need beyond its own fragment
    from the next lane by shuffle, and runs the depthwise on half2 channel pairs - fp16 products and
    sums (HFMA2), the one stage of any family that does not accumulate in fp32; the family name records
    it, verification holds it to the same fp16 tolerance. Finished output rows go to shared memory once
    for the projection (mma, fp32). A tile is the 14 (stride 2: 7) output columns whose windows fit 16
    input columns by out_h rows, all channels; a block walks tiles_per_block tiles (the next one's x
    staged while it computes this one), its warps splitting the hidden chunks; the 1x1 weights are
    staged per block or loaded from global memory (L1) into fragments (`weights`). fp16 NHWC, 3x3,
    padding 1, stride 1 or 2; hidden channels a multiple of 16, C_out of 8."""
    name = "ir_register_dw"
    template = "ir_register_dw.cu.j2"
    entry = "ir_register_dw"
    SEG_IN = 16                # input columns of a tile: two n8 tiles of the expand
    LARGE_GPU_SMS = 132        # (H100 SXM) below two waves of multi-tile blocks there, one tile per block wins

    def applies(self, problem) -> bool:
        return (problem.op == "ir" and problem.k == 3 and problem.padding == 1 and problem.stride in (1, 2)
                and super().applies(problem))

    def space(self, problem) -> dict:
        # out_h 7 and 14 divide MobileNetV2's 56, 28 and 14 rows (no idle last tile row)
        return {"out_h": (1, 2, 4, 6, 7, 8, 12, 14, 16), "warps": (1, 2, 3, 4, 6, 8, 9, 12), "min_blocks": (1, 2, 3, 4),
                "tiles_per_block": (1, 2, 4, 8, 16), "weights": ("global", "shared")}

    def seg_out(self, problem) -> int:
        """Output columns of a tile: those whose windows fit its 16 input columns."""
        return (self.SEG_IN - problem.k) // problem.stride + 1

    def tiles(self, problem, config) -> int:
        return ceil_div(problem.W_out, self.seg_out(problem)) * ceil_div(problem.H_out, config["out_h"]) * problem.N

    def threads(self, problem, config) -> int:
        return 32 * config["warps"]

    def registers(self, problem, config) -> int:
        """Two chunks' fragments (a warp's own, one loaded per chunk when it has several), the
        depthwise's rows in flight, plus indices, pointers and expand fragments."""
        chunk = 4 * (_expand_k(problem) // 16) + 2 + problem.k ** 2 + 1
        return min(2 * chunk + 72, self._register_cap(problem, config))

    def shared_bytes(self, problem, config) -> int:
        """The template's layout (it asserts the same sum), row strides an odd number of 16-byte units:
        the 1x1 weights where staged (the expand's with its bias column, zeros to whole k8 steps), x over
        a tile's input rows and 16 columns (likewise; two buffers when a block has several tiles), and
        the depthwise outputs (16 / stride slots per output row)."""
        x_ld, dw_ld = _odd_units(_expand_k(problem)), _odd_units(problem.hidden)
        in_rows = (config["out_h"] - 1) * problem.stride + problem.k
        slots = config["out_h"] * self.SEG_IN // problem.stride
        x_bufs = 2 if config["tiles_per_block"] > 1 else 1
        weights = problem.hidden * x_ld + problem.C_out * dw_ld if config["weights"] == "shared" else 0
        return 2 * (weights + x_bufs * in_rows * self.SEG_IN * x_ld + slots * dw_ld)

    def check(self, problem, config) -> str | None:
        reason = space_violation(self.space(problem), config)
        if reason:
            return reason
        if problem.hidden % 16 or problem.C_out % 8:
            return f"{self.name} needs the hidden channels a multiple of 16, C_out of 8"
        if problem.hidden // 16 % config["warps"]:
            return "the hidden channels' chunks of 16 do not split evenly over the warps"
        if config["out_h"] * self.SEG_IN // problem.stride % 16:
            return "the depthwise output slots are not whole m16 tiles (stride 2: out_h even)"
        if config["out_h"] > max(2, 2 * problem.H_out):
            return "out_h far larger than the output (pruned)"
        if config["tiles_per_block"] > 1 and self.tiles(problem, config) < 2 * config["tiles_per_block"] * self.LARGE_GPU_SMS:
            return "too few tiles to give every SM's blocks several (pruned)"
        return self._resource_violation(problem, config)

    @staticmethod
    def _default_candidates(problem):
        """4 output rows, the hidden chunks over 3 warps, one tile per block, weights from global memory;
        then others."""
        return [{"out_h": out_h, "warps": warps, "min_blocks": 1, "tiles_per_block": 1, "weights": "global"}
                for out_h in (4, 2, 8) for warps in (3, 2, 4, 1, 6, 9)]

    def template_params(self, problem, config) -> dict:
        return {"OUT_H": config["out_h"], "WARPS": config["warps"], "MIN_BLOCKS": config["min_blocks"],
                "TILES_PER_BLOCK": config["tiles_per_block"], "WEIGHTS_SHARED": config["weights"] == "shared",
                "C_IN": problem.C, "HIDDEN": problem.hidden,
                "C_OUT": problem.C_out, "RESIDUAL": problem.residual, "X_VEC": copy_width(problem),
                "SHARED_BYTES": self.shared_bytes(problem, config)}

    def launch(self, problem, config) -> Launch:
        return Launch(grid=(ceil_div(self.tiles(problem, config), config["tiles_per_block"]), 1, 1),
                      block=(self.threads(problem, config), 1, 1), shared_mem=self.shared_bytes(problem, config))

SIMT = SimtFusedBlock()
TENSOR_CORE = TensorCoreFusedBlock()
CLUSTER = ClusterFusedBlock()
EXPAND_DEPTHWISE = ExpandDepthwise()
STREAM_PROJECT = StreamingDepthwiseProject()
IR_STREAM = InvertedResidualStream()
IR_TENSOR_DW = InvertedResidualTensorDepthwise()
IR_REGISTER_DW = InvertedResidualRegisterDepthwise()
FAMILIES = [SIMT, TENSOR_CORE, CLUSTER, EXPAND_DEPTHWISE, STREAM_PROJECT, IR_STREAM, IR_TENSOR_DW, IR_REGISTER_DW]
