"""Dense KxK convolution (op "conv", groups = 1): a network's stem, a few input channels into a few
dozen outputs. One family: fp16 NHWC on tensor cores (templates/conv_nhwc_tc.cu.j2), the im2col GEMM
done from a staged input tile. Other dtypes and layouts have no family here (PyTorch keeps them)."""
from __future__ import annotations

from . import Launch, ceil_div, resource_violation, tile_grid

_MAX_KP = 64          # window length K*K*C, padded to 16: the B fragments of every step stay in registers
_MAX_C_OUT = 64       # every output channel in one block: NT = C_out/8 accumulator tiles per thread
_MAX_FRAGMENTS = 16   # (KP/16) x (C_out/8) B fragments per thread: 64 x 64 spilled on sm_80
_MAX_LOADS = 12       # input elements a thread holds in registers while the tile before is computed
_REGISTER_OVERHEAD = 40


class TensorCoreConv:
    name = "conv_nhwc_tc"
    layout = "nhwc"
    template = "conv_nhwc_tc.cu.j2"
    entry = "conv2d"
    exact_channels = True     # compiled for the layer's C and C_out

    @staticmethod
    def _k_padded(problem) -> int:
        return ceil_div(problem.k * problem.k * problem.C, 16) * 16

    def applies(self, problem) -> bool:
        return (problem.op == "conv" and problem.layout == "nhwc" and problem.dtype == "float16"
                and problem.C_out % 8 == 0 and problem.C_out <= _MAX_C_OUT and self._k_padded(problem) <= _MAX_KP
                and self._k_padded(problem) // 16 * problem.C_out // 8 <= _MAX_FRAGMENTS)

    def space(self, problem) -> dict:
        return {"tile_h": (1, 2, 4, 8, 16), "tile_w": (8, 16, 32, 64), "warps": (1, 2, 4, 8), "tiles": (1, 2, 4, 8)}

    def check(self, problem, cfg) -> str | None:
        if not self.applies(problem):
            return (f"the tensor-core conv needs float16 NHWC, C_out a multiple of 8 up to {_MAX_C_OUT}, "
                    f"K*K*C up to {_MAX_KP}, and (K*K*C/16) x (C_out/8) up to {_MAX_FRAGMENTS}")
        pixels = cfg["tile_h"] * cfg["tile_w"]
        if pixels % 16:
            return "tile_h * tile_w must be whole groups of 16 pixels"
        if cfg["warps"] > pixels // 16:
            return f"{cfg['warps']} warps for {pixels // 16} m16 tiles"
        if cfg["tile_h"] > max(1, problem.H_out) or cfg["tile_w"] > max(16, 2 * problem.W_out):
            return "tile larger than the output"
        k, s, kp = problem.k, problem.stride, self._k_padded(problem)
        in_elems = ((cfg["tile_h"] - 1) * s + k) * ((cfg["tile_w"] - 1) * s + k) * problem.C
        loads = ceil_div(in_elems, 32 * cfg["warps"])
        if loads > _MAX_LOADS:
            return f"{loads} input elements per thread and tile (at most {_MAX_LOADS} in registers)"
        if cfg["tiles"] > 1 and self._tiles(problem, cfg) < 2 * cfg["tiles"]:
            return f"{self._tiles(problem, cfg)} tiles: too few for {cfg['tiles']} per block"
        nt, steps = problem.C_out // 8, kp // 16
        registers = 2 * steps * nt + 4 * steps + 6 * nt + 2 * loads + 4 + _REGISTER_OVERHEAD
        return resource_violation(32 * cfg["warps"], 2 * 2 * in_elems, registers)

    @staticmethod
    def _tiles(problem, cfg):
        """Output tiles over all images (the template walks them as one range)."""
        per_image, _, images = tile_grid(problem, cfg["tile_h"], cfg["tile_w"], problem.C)
        return per_image * images

    def default_config(self, problem) -> dict:
        return {"tile_h": 1, "tile_w": 16, "warps": 1, "tiles": 1}

    def template_params(self, problem, cfg) -> dict:
        return {"TILE_H": cfg["tile_h"], "TILE_W": cfg["tile_w"], "WARPS": cfg["warps"], "TILES": cfg["tiles"],
                "C_IN": problem.C, "C_OUT": problem.C_out}

    def divisors(self, problem, cfg) -> dict:
        return {}       # compiled for its channel counts: reused only for exactly those

    def launch(self, problem, cfg) -> Launch:
        return Launch(grid=(ceil_div(self._tiles(problem, cfg), cfg["tiles"]), 1, 1), block=(32 * cfg["warps"], 1, 1),
                      shared_mem=0)


FAMILIES = [TensorCoreConv()]
