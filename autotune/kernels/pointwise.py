"""Pointwise (1x1) convolution families: a register-blocked SIMT GEMM (fp32, fp16) and tensor-core GEMMs (fp16:
mma.sync, also cluster-split and weights-resident streaming; Hopper's wgmma on sm_90), plus, for float32 problems
that allow it (Problem.tf32), a TF32 tensor-core GEMM.

Both compute the GEMM with pixels as rows and output channels as columns, K = input channels:
    NHWC: y[M x C_out] = x[M x C] * w^T, M = N*H*W, rows strided by ldx / ldy
    NCHW: per image (grid.z), y_n[C_out x HW]^T = x_n[C x HW]^T * w^T
block_m tiles pixels (grid.x), block_n tiles output channels (grid.y); the streaming and wgmma families
launch one linear grid instead (see their launch()).

Vector widths (vec_x, vec_w, vec_y, in elements) must divide the runtime sizes they step along, which check()
verifies on the Problem: x loads along C (NHWC; also the stride ldx) or H*W (NCHW), w loads along C, y stores
along C_out (NHWC; also ldy) or H*W (NCHW). check() assumes ldx = C and ldy = C_out: an exporter that passes
padded strides (e.g. TensorRT's HWC8) must also check that vec_x divides ldx and vec_y divides ldy. The
kernels also assume x, w, y base pointers 16-byte aligned (fresh allocations are; offset views may not be).
space() and default_config() use only the widest valid vector for each stream (narrower is never faster);
check() accepts any valid width. Widths valid for C stay valid for strides padded to a multiple of 8.
"""
from __future__ import annotations

from . import MAX_DYNAMIC_SHARED_BYTES_SM90, Launch, ceil_div, clustered, idle_in_cluster, resource_violation

VECTOR_BYTES = 16
VEC_PARAMS = ("vec_x", "vec_w", "vec_y")


def _round_up(a, b):
    return ceil_div(a, b) * b


def _gemm_rows(problem):
    """Pixels one z-slice of the grid covers: all of them (NHWC) or one image's (NCHW)."""
    return problem.N * problem.H * problem.W if problem.layout == "nhwc" else problem.H * problem.W


def vector_dims(problem) -> dict:
    """For each vector width, the runtime sizes (strides at their defaults) it must divide."""
    hw = problem.H * problem.W
    if problem.layout == "nhwc":
        return {"vec_x": (problem.C,), "vec_w": (problem.C,), "vec_y": (problem.C_out,)}
    return {"vec_x": (hw,), "vec_w": (problem.C,), "vec_y": (hw,)}


def vector_widths(problem) -> tuple:
    """Vector widths (elements) that fit in one 16-byte access."""
    return tuple(v for v in (1, 2, 4, 8) if v * problem.itemsize <= VECTOR_BYTES)


def widest_vector(problem, name) -> int:
    dims = vector_dims(problem)[name]
    return max(v for v in vector_widths(problem) if all(d % v == 0 for d in dims))


def _gemm_grid(problem, config) -> tuple:
    """x = block_m-pixel tiles (NHWC: of all images; NCHW: of one image), y = block_n-channel tiles,
    z = images (NCHW)."""
    p = problem
    rows, images = (p.N * p.H * p.W, 1) if p.layout == "nhwc" else (p.H * p.W, p.N)
    return ceil_div(rows, config["block_m"]), ceil_div(p.C_out, config["block_n"]), images


class _Pointwise:
    entry = "pw_conv2d"
    residual_epilogue = True    # codegen.render(..., add_residual=True): y += a residual laid out like y
    params: tuple = ()
    space_values: dict = {}
    flag_params: tuple = ()     # parameters that are 0/1 switches rather than sizes

    def applies(self, problem) -> bool:
        return problem.op == "pw"

    def space(self, problem) -> dict:
        space = dict(self.space_values)
        for name in VEC_PARAMS:
            space[name] = (widest_vector(problem, name),)
        return space

    # ---- shared pieces of check() ------------------------------------------------------------------
    def _check_keys(self, config):
        missing = [p for p in self.params if p not in config]
        if missing:
            return f"missing parameter(s): {', '.join(missing)}"
        unknown = sorted(set(config) - set(self.params))
        if unknown:
            return f"unknown parameter(s): {', '.join(unknown)}"
        for p in self.params:
            v = config[p]
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if p in self.flag_params else 1):
                return f"{p}={v!r} must be a {'0 or 1 flag' if p in self.flag_params else 'positive integer'}"
        return None

    def _check_space(self, config):
        """The parameters are this family's, and each value is one the space offers."""
        reason = self._check_keys(config)
        if reason:
            return reason
        for p, values in self.space_values.items():
            if config[p] not in values:
                return f"{p}={config[p]} is not one of {values}"
        return None

    def _check_vectors(self, problem, config):
        dims = vector_dims(problem)
        for name in VEC_PARAMS:
            v = config[name]
            if v not in vector_widths(problem):
                return f"{name}={v}: vector widths are {vector_widths(problem)} for {problem.dtype}"
            bad = [d for d in dims[name] if d % v]
            if bad:
                return f"{name}={v} does not divide {bad[0]} (misaligned vector accesses)"
        return None

    def _check_resources(self, problem, config):
        return resource_violation(self.threads(config), self.shared_bytes(problem, config),
                                  self.registers(problem, config), min_threads=32)

    def _check_pruning(self, problem, config, k_step, min_stages=1):
        """Tiles far beyond the problem are valid but only waste the tuner's time (and a ring deeper
        than the K slices, beyond the family's shallowest)."""
        smallest = {p: min(self.space_values[p]) for p in ("block_m", "block_n", "block_k")}
        for p, size, step in (("block_m", _gemm_rows(problem), 16), ("block_n", problem.C_out, 8),
                              ("block_k", problem.C, k_step)):
            if config[p] > smallest[p] and config[p] >= 2 * _round_up(size, step):
                return f"{p}={config[p]} is at least twice the problem's {size} (pruned)"
        k_tiles = ceil_div(problem.C, config["block_k"])
        if config["stages"] > max(min_stages, k_tiles):
            return f"stages={config['stages']} > {k_tiles} K slices (pruned)"
        return None

    def copies_per_thread(self, config):
        """Vector copies global -> shared per thread per K slice: (x, w)."""
        c, threads = config, self.threads(config)
        return (ceil_div(c["block_m"] * c["block_k"], c["vec_x"] * threads),
                ceil_div(c["block_n"] * c["block_k"], c["vec_w"] * threads))

    def divisors(self, problem, config) -> dict:
        if problem.layout == "nhwc":
            return {"C": max(config["vec_x"], config["vec_w"]), "C_out": config["vec_y"]}
        return {"C": config["vec_w"], "HW": max(config["vec_x"], config["vec_y"])}

    # ---- launch ------------------------------------------------------------------------------------
    def launch(self, problem, config) -> Launch:
        return Launch(grid=_gemm_grid(problem, config), block=(self.threads(config), 1, 1), shared_mem=0)  # static smem

    def _first_fit(self, problem, candidates) -> dict | None:
        """The first candidate, with the widest vectors, that check() accepts; None if none does."""
        for candidate in candidates:
            config = {**candidate, **{name: widest_vector(problem, name) for name in VEC_PARAMS}}
            if self.check(problem, config) is None:
                return config
        return None

    def default_config(self, problem) -> dict:
        # small C: one K slice, nothing to pipeline
        config = self._first_fit(problem, ({**c, "stages": stages} for c in self._default_candidates()
                                           for stages in (c["stages"], 1)))
        if config is None:
            raise AssertionError(f"{self.name}: no default configuration fits {problem.key}")  # check() bug
        return config

    @staticmethod
    def _check_warp_tiles(config):
        """Tensor-core families: the block's pixels split into whole m16 tiles per warp, and its output
        channels (where block_n is a parameter) into whole n8 tiles."""
        c = config
        if c["block_m"] % (16 * c["warps_m"]):
            return f"block_m={c['block_m']} is not warps_m={c['warps_m']} whole m16 tiles"
        if "block_n" in c and c["block_n"] % (8 * c["warps_n"]):
            return f"block_n={c['block_n']} is not warps_n={c['warps_n']} whole n8 tiles"
        return None


class SimtPointwise(_Pointwise):
    """Tiled SIMT GEMM: fp32 math on CUDA cores, fp32 or fp16 storage.

    block_m x block_n output tile per block, thread_m x thread_n outputs per thread (as runs of <= 4 contiguous
    elements), block_k-deep K slices staged in shared memory as fp32 (1 or 2 buffers = stages).
    """
    name = "pointwise"
    template = "pointwise.cu.j2"
    params = ("block_m", "block_n", "block_k", "thread_m", "thread_n", "stages", *VEC_PARAMS)
    space_values = {
        "block_m": (16, 32, 64, 128),
        "block_n": (16, 32, 48, 64, 96, 128),
        "block_k": (8, 16, 32),
        "thread_m": (2, 4, 8),
        "thread_n": (2, 4, 8),
        "stages": (1, 2),
    }

    def threads(self, config):
        return (config["block_m"] // config["thread_m"]) * (config["block_n"] // config["thread_n"])

    def shared_bytes(self, problem, config):
        c = config
        return c["stages"] * c["block_k"] * ((c["block_m"] + 4) + (c["block_n"] + 4)) * 4

    def registers(self, problem, config):
        """Estimated registers per thread: an upper bound, fitted on ptxas (CUDA 13, sm_80 and sm_90) over
        thousands of configurations and checked by tests/test_pointwise_compile.py."""
        c = config
        tm, tn = c["thread_m"], c["thread_n"]
        x_copies, w_copies = self.copies_per_thread(c)
        words = lambda vec: ceil_div(vec * problem.itemsize, 4)      # 32-bit registers per loaded vector
        accumulators = tm * tn + tm * tn // 8   # ptxas keeps some products / bias values besides
        fragments = tm + tn                     # one k step of x and w values
        prefetch = 2 * (x_copies * words(c["vec_x"]) + w_copies * words(c["vec_w"]))   # next K slice (+ converts)
        addressing = 4 * (x_copies + w_copies)  # each unrolled load keeps its offset and bounds live
        return accumulators + fragments + prefetch + addressing + 8 * c["stages"] + 26

    def check(self, problem, config):
        reason = self._check_space(config)
        if reason:
            return reason
        c = config
        if c["block_m"] % c["thread_m"] or c["block_n"] % c["thread_n"]:
            return "thread tile does not divide the block tile"
        if self.threads(c) % 32:
            return f"{self.threads(c)} threads is not a whole number of warps"
        reason = self._check_vectors(problem, c)
        if reason:
            return reason
        x_row = c["block_k"] if problem.layout == "nhwc" else c["block_m"]
        if x_row % c["vec_x"] or c["block_k"] % c["vec_w"]:
            return "vector width does not divide the tile row"
        copies = self.copies_per_thread(c)
        if max(copies) > 8:
            # every copy is staged in registers: too few threads for the tile at this vector width
            return f"{max(copies)} vector loads per thread per K slice (at most 8)"
        return self._check_resources(problem, c) or self._check_pruning(problem, c, 8)

    def _default_candidates(self):
        for bm, bn in ((64, 64), (64, 32), (32, 32), (32, 16), (16, 16)):
            for bk in (16, 8):
                yield dict(block_m=bm, block_n=bn, block_k=bk, thread_m=4 if bm >= 64 else 2,
                           thread_n=4 if bn >= 64 else 2, stages=2)

    def template_params(self, problem, config):
        c = config
        # a store covers at most one contiguous run of a thread's outputs (<= 4 elements)
        run = min(4, c["thread_n"] if problem.layout == "nhwc" else c["thread_m"])
        return {
            "BLOCK_M": c["block_m"], "BLOCK_N": c["block_n"], "BLOCK_K": c["block_k"],
            "THREAD_M": c["thread_m"], "THREAD_N": c["thread_n"], "STAGES": c["stages"],
            "VEC_X": c["vec_x"], "VEC_W": c["vec_w"], "VEC_Y": min(c["vec_y"], run),
        }


class TensorCorePointwise(_Pointwise):
    """fp16 GEMM on tensor cores (mma.sync m16n8k16, fp32 accumulation).

    block_m x block_n output tile per block, warps_m x warps_n warps each computing a
    (block_m/warps_m) x (block_n/warps_n) tile, block_k-deep K slices in a stages-deep cp.async ring;
    split_k groups of such warps share each slice's k16 steps and add up their sums in shared memory
    (more warps per tile where the tiles are few and K is long: the 7x7 and 14x14 layers).
    Configurations stored before split_k existed mean split_k = 1.
    """
    name = "pointwise_tc"
    template = "pointwise_tc.cu.j2"
    params = ("block_m", "block_n", "block_k", "warps_m", "warps_n", "stages", "split_k", *VEC_PARAMS)
    space_values = {
        "block_m": (16, 32, 64, 128, 256),
        "block_n": (16, 32, 48, 64, 96, 128),
        "block_k": (16, 32, 64),
        "warps_m": (1, 2, 4),
        "warps_n": (1, 2, 4),
        "stages": (1, 2, 3, 4),
        "split_k": (1, 2, 4),
    }
    SKEW = 8   # halves of padding per shared row

    def applies(self, problem) -> bool:
        return problem.op == "pw" and problem.dtype == "float16"

    @staticmethod
    def _split_k(config) -> int:
        return config.get("split_k", 1)

    def threads(self, config):
        return config["warps_m"] * config["warps_n"] * self._split_k(config) * 32

    def shared_bytes(self, problem, config):
        c, s = config, self.SKEW
        if problem.layout == "nhwc":
            x_tile, y_tile = c["block_m"] * (c["block_k"] + s), c["block_m"] * (c["block_n"] + s)
        else:
            x_tile, y_tile = c["block_k"] * (c["block_m"] + s), c["block_n"] * (c["block_m"] + s)
        w_tile = c["block_n"] * (c["block_k"] + s)
        partial_sums = (self._split_k(c) - 1) * c["block_m"] * c["block_n"] * 2    # floats, in halves
        return 2 * max(c["stages"] * (x_tile + w_tile), y_tile, partial_sums)

    def registers(self, problem, config):
        """Estimated registers per thread: an upper bound, fitted on ptxas (CUDA 13, sm_80 and sm_90) over
        hundreds of configurations and checked by tests/test_pointwise_compile.py."""
        c = config
        mt = c["block_m"] // c["warps_m"] // 16
        nt = c["block_n"] // c["warps_n"] // 8
        accumulators = 4 * mt * nt
        fragments = 4 * mt + 2 * nt             # one k16 step of A and B
        x_copies, w_copies = self.copies_per_thread(c)
        addressing = 2 * (min(x_copies, 4) + min(w_copies, 4))     # copy loops are unrolled by <= 4
        # ptxas also loads the next k16 step's fragments early and keeps partial products around: ~acc / 4;
        # a single-buffered slice lets it hoist more of the slice's loads, and k groups add their sums
        unbuffered = 5 * (c["block_k"] // 16) if c["stages"] == 1 else 0
        reduction = 16 * (self._split_k(c) - 1)
        return accumulators + accumulators // 4 + fragments + addressing + 2 * c["stages"] + unbuffered + reduction + 40

    def check(self, problem, config):
        if not self.applies(problem):
            return "the tensor-core kernel is for float16 pointwise problems"
        config = {"split_k": 1, **config}
        reason = self._check_space(config)
        if reason:
            return reason
        c = config
        if c["block_k"] % (16 * c["split_k"]):
            return f"block_k={c['block_k']} is not split_k={c['split_k']} whole k16 steps per warp group"
        reason = self._check_warp_tiles(c) or self._check_vectors(problem, c)
        if reason:
            return reason
        # (block_m >= 16, block_n >= 16, block_k >= 16 and vectors <= 8 halves: every row divides evenly)
        return self._check_resources(problem, c) or self._check_pruning(problem, c, 16)

    def _default_candidates(self):
        for bm, bn in ((64, 64), (64, 32), (32, 32), (32, 16), (16, 16)):
            for bk in (32, 16):
                yield dict(block_m=bm, block_n=bn, block_k=bk, warps_m=max(1, bm // 32), warps_n=max(1, bn // 32),
                           stages=2, split_k=1)

    def template_params(self, problem, config):
        c = config
        return {
            "BLOCK_M": c["block_m"], "BLOCK_N": c["block_n"], "BLOCK_K": c["block_k"],
            "WARPS_M": c["warps_m"], "WARPS_N": c["warps_n"], "STAGES": c["stages"],
            "SPLIT_K": self._split_k(c), "CLUSTER_K": c.get("cluster_k", 1),
            "VEC_X": c["vec_x"], "VEC_W": c["vec_w"], "VEC_Y": c["vec_y"],
        }


class ClusterPointwise(TensorCorePointwise):
    """The tensor-core GEMM with K split across the cluster_k blocks of a thread-block cluster (sm_90+).

    Where K is long and the output has few tiles (the 7x7 and 14x14 layers), one block per tile cannot keep
    enough copies in flight: its bytes in flight are capped by one block's shared memory. Here each block of
    a cluster streams a contiguous 1/cluster_k of the K slices for the same tile, so cluster_k times as many
    blocks share the SMs without re-reading any operand; the partial tiles are added through distributed
    shared memory, each block finishing 1/cluster_k of the rows.
    """
    name = "pointwise_tc_cluster"
    min_sm = 90
    params = (*TensorCorePointwise.params, "cluster_k")
    space_values = {**TensorCorePointwise.space_values, "cluster_k": (2, 4, 8)}

    def applies(self, problem) -> bool:
        return super().applies(problem) and problem.C >= 32      # at least two k16 slices to share

    def shared_bytes(self, problem, config):
        c = config
        rows, inner = (c["block_m"], c["block_n"]) if problem.layout == "nhwc" else (c["block_n"], c["block_m"])
        return max(super().shared_bytes(problem, config), rows * (inner + 4) * 4)

    def check(self, problem, config):
        reason = super().check(problem, config)
        if reason:
            return reason
        c = config
        rows = c["block_m"] if problem.layout == "nhwc" else c["block_n"]
        if rows % c["cluster_k"]:
            return f"cluster_k={c['cluster_k']} does not divide the tile's {rows} output rows"
        k_tiles = ceil_div(problem.C, c["block_k"])
        if idle_in_cluster(k_tiles, c["cluster_k"]):
            return f"cluster_k={c['cluster_k']} blocks for {k_tiles} K slices leave some idle"
        share = ceil_div(k_tiles, c["cluster_k"])
        if c["stages"] > 1 and c["stages"] > share:
            return f"stages={c['stages']} > {share} K slices per block (pruned)"
        return None

    def _default_candidates(self):
        for candidate in super()._default_candidates():
            yield {**candidate, "cluster_k": 2}

    def launch(self, problem, config) -> Launch:
        return clustered(super().launch(problem, config), config["cluster_k"])


class StreamingPointwise(_Pointwise):
    """NHWC fp16 tensor-core GEMM for the memory-bound layers: weights stay in shared memory while each
    block streams `tiles` pixel tiles (block_m pixels x all channels) through a `stages`-deep cp.async
    ring, so loads of the next tiles overlap the math and stores of this one, x is read once and the
    weights once per block. Compiled for its channel counts: all C_out columns are one block tile,
    warps_m x warps_n warps split it. stage_y = 1 stores through a per-warp shared scratch (vec_y
    halves per store), 0 straight from the accumulator fragments (2 halves per store).
    """
    name = "pointwise_tc_stream"
    template = "pointwise_tc_stream.cu.j2"
    exact_channels = True
    params = ("block_m", "warps_m", "warps_n", "stages", "tiles", "stage_y", *VEC_PARAMS)
    space_values = {
        "block_m": (16, 32, 64, 128, 256),
        "warps_m": (1, 2, 4, 8),
        "warps_n": (1, 2, 4),
        "stages": (2, 3, 4),
        "tiles": (1, 2, 4, 8, 16),
        "stage_y": (0, 1),
    }
    flag_params = ("stage_y",)
    SKEW = 8

    MIN_BLOCKS = 100      # fewer blocks than this idle SMs on the GPUs we target: more tiles per block is pruned

    @staticmethod
    def _kind(problem) -> bool:
        return problem.op == "pw" and problem.dtype == "float16" and problem.layout == "nhwc"

    def applies(self, problem) -> bool:
        """fp16 NHWC pointwise whose weights fit in shared memory beside the smallest tile ring."""
        return self._kind(problem) and self.default_config(problem) is not None

    @staticmethod
    def block_n(problem, config) -> int:
        return _round_up(problem.C_out, 8 * config["warps_n"])

    def threads(self, config):
        return config["warps_m"] * config["warps_n"] * 32

    def shared_bytes(self, problem, config):
        c, ld = config, _round_up(problem.C, 16) + self.SKEW
        scratch = c["warps_m"] * c["warps_n"] * 16 * (self.block_n(problem, c) // c["warps_n"] + self.SKEW)
        return 2 * (self.block_n(problem, c) * ld + c["stages"] * c["block_m"] * ld + (scratch if c["stage_y"] else 0))

    def registers(self, problem, config):
        """Estimated registers per thread: an upper bound, fitted on ptxas (CUDA 13, sm_80 and sm_90) and
        checked by tests/test_pointwise_compile.py."""
        c = config
        mt = c["block_m"] // c["warps_m"] // 16
        nt = self.block_n(problem, c) // c["warps_n"] // 8
        accumulators = 4 * mt * nt
        x_copies = ceil_div(c["block_m"] * _round_up(problem.C, 16), c["vec_x"] * self.threads(c))
        staged_stores = ceil_div(16 * nt * 8 // c["vec_y"], 32) if c["stage_y"] else 0    # per lane per m16 row
        scalar_copies = 64 if c["vec_x"] == 1 else 0      # 2-byte copies go through registers, unrolled
        return (accumulators + accumulators // 4 + 8 * mt + 3 * nt + 4 * min(x_copies, 8)
                + 6 * min(staged_stores, 8) + scalar_copies + 48)

    def check(self, problem, config):
        if not self._kind(problem):
            return "the streaming kernel is for float16 NHWC pointwise problems"
        reason = self._check_space(config)
        if reason:
            return reason
        c = config
        reason = self._check_warp_tiles(c)
        if reason:
            return reason
        if c["block_m"] // c["warps_m"] > 64:
            return f"warp tile of {c['block_m'] // c['warps_m']} rows (at most 64: the fragments of more crowd out the accumulators)"
        reason = self._check_vectors(problem, c)
        if reason:
            return reason
        if c["warps_n"] > 1 and self.block_n(problem, c) - problem.C_out >= 8 * c["warps_n"] // 2:
            return f"warps_n={c['warps_n']} pads {problem.C_out} output channels to {self.block_n(problem, c)} (pruned)"
        reason = self._check_resources(problem, c)
        if reason:
            return reason
        tiles = ceil_div(problem.N * problem.H * problem.W, c["block_m"])
        if c["tiles"] > 1 and ceil_div(tiles, c["tiles"]) < self.MIN_BLOCKS:
            return f"tiles={c['tiles']} per block leaves {ceil_div(tiles, c['tiles'])} blocks (pruned)"
        if c["stages"] > 2 and c["stages"] > c["tiles"] + 1:
            return f"stages={c['stages']} > tiles={c['tiles']} + 1 (pruned)"
        return None

    def _default_candidates(self):
        for bm, wm in ((128, 4), (64, 4), (32, 2)):
            for wn in (1, 2, 4):
                yield dict(block_m=bm, warps_m=wm, warps_n=wn, stages=2, tiles=4, stage_y=1)
                yield dict(block_m=bm, warps_m=wm, warps_n=wn, stages=2, tiles=1, stage_y=0)

    def default_config(self, problem) -> dict | None:
        """The first candidate that fits, or None where the weights leave no room (applies() is then False)."""
        return self._first_fit(problem, self._default_candidates())

    def divisors(self, problem, config) -> dict:
        return {}       # compiled for its channel counts: reused only for exactly those

    def launch(self, problem, config) -> Launch:
        tiles = ceil_div(problem.N * problem.H * problem.W, config["block_m"])
        return Launch(grid=(ceil_div(tiles, config["tiles"]), 1, 1), block=(self.threads(config), 1, 1))

    def template_params(self, problem, config):
        c = config
        return {
            "C": problem.C, "C_OUT": problem.C_out, "BLOCK_M": c["block_m"], "BLOCK_N": self.block_n(problem, c),
            "WARPS_M": c["warps_m"], "WARPS_N": c["warps_n"], "STAGES": c["stages"], "TILES": c["tiles"],
            "STAGE_Y": bool(c["stage_y"]), "VEC_X": c["vec_x"], "VEC_W": c["vec_w"], "VEC_Y": c["vec_y"],
        }


class TF32Pointwise:
    """float32 1x1 on TF32 tensor cores (mma.sync m16n8k8, templates/pointwise_tf32.cu.j2), both layouts:
    only for problems with tf32 set, an explicit option. The block_m x block_n tile is split over
    warps_m x warps_n warps; K is walked block_k channels at a time through a stages-deep cp.async ring
    in shared memory."""
    name = "pointwise_tf32"
    template = "pointwise_tf32.cu.j2"
    entry = "pw_conv2d"
    residual_epilogue = True

    def applies(self, problem) -> bool:
        return problem.op == "pw" and problem.tf32

    def space(self, problem) -> dict:
        return {"block_m": (16, 32, 64, 128), "block_n": (8, 16, 32, 64, 128),
                "warps_m": (1, 2, 4), "warps_n": (1, 2, 4), "block_k": (16, 32), "stages": (2, 3)}

    def check(self, problem, config) -> str | None:
        if not self.applies(problem):
            return "the TF32 kernel is for float32 pointwise problems that allow TF32"
        c = config
        reason = _Pointwise._check_warp_tiles(c)
        if reason:
            return reason
        if c["block_n"] > max(8, _round_up(problem.C_out, 8)):
            return "block_n larger than C_out"
        mt, nt = c["block_m"] // c["warps_m"] // 16, c["block_n"] // c["warps_n"] // 8
        shared = c["stages"] * (c["block_m"] + c["block_n"]) * (c["block_k"] + 4) * 4
        registers = 4 * mt * nt + 4 * mt + 2 * nt + 40          # accumulators, one k8 step's fragments
        return resource_violation(32 * c["warps_m"] * c["warps_n"], shared, registers)

    def default_config(self, problem) -> dict:
        for block_n in (32, 16, 8):
            config = {"block_m": 64, "block_n": block_n, "warps_m": 2, "warps_n": 1, "block_k": 32, "stages": 2}
            if self.check(problem, config) is None:
                return config
        raise AssertionError(f"{self.name}: no default configuration fits {problem.key}")  # check() bug

    def template_params(self, problem, config) -> dict:
        return {"BLOCK_M": config["block_m"], "BLOCK_N": config["block_n"], "WARPS_M": config["warps_m"],
                "WARPS_N": config["warps_n"], "BLOCK_K": config["block_k"], "STAGES": config["stages"]}

    def divisors(self, problem, config) -> dict:
        return {}                     # element-wise loads and stores: any C, C_out and strides

    def launch(self, problem, config) -> Launch:
        return Launch(grid=_gemm_grid(problem, config), block=(32 * config["warps_m"] * config["warps_n"], 1, 1),
                      shared_mem=0)


class WgmmaPointwise(_Pointwise):
    """NHWC fp16 GEMM on Hopper's warpgroup MMA (wgmma, sm_90; templates/pointwise_wgmma.cu.j2), for the
    deep layers (K up to 960, few output tiles) where pointwise_tc is latency-bound: block_m / 64 x
    warpgroups_n warpgroups of 128 threads, operands read by the tensor cores straight from shared
    memory, and a stages-deep cp.async ring of block_k-channel slices in dynamic shared memory beyond
    48 KB, so that many slices are in flight per block. cluster_k > 1 splits K over the blocks of a
    thread-block cluster (partial tiles added through distributed shared memory): more blocks where the
    tiles are few. Operands move in 16-byte chunks: C % 8 == 0."""
    name = "pointwise_wgmma"
    template = "pointwise_wgmma.cu.j2"
    min_sm = max_sm = 90        # compiled for sm_90a (compiler.ARCH_SPECIFIC_MARK)
    params = ("block_m", "block_n", "block_k", "warpgroups_n", "stages", "cluster_k", *VEC_PARAMS)
    space_values = {
        "block_m": (64, 128),
        "block_n": (16, 32, 48, 64, 96, 128, 160, 192, 256),
        "block_k": (64,),         # rows of 128 bytes: the 128-byte swizzle
        "warpgroups_n": (1, 2),
        "stages": (3, 4, 6, 8, 12),
        "cluster_k": (1, 2, 4),
    }
    MAX_WARPGROUP_N = 128       # accumulators per thread: half of this
    ALIGN_SLACK = 1024          # the kernel rounds its shared base up to a 1024-byte swizzle atom

    def applies(self, problem) -> bool:
        return problem.op == "pw" and problem.dtype == "float16" and problem.layout == "nhwc" and problem.C % 8 == 0

    def threads(self, config):
        return 128 * config["block_m"] // 64 * config["warpgroups_n"]

    def shared_bytes(self, problem, config):
        c = config
        ring = c["stages"] * (c["block_m"] + c["block_n"]) * c["block_k"] * 2
        epilogue = c["block_m"] * (c["block_n"] + 4) * 4 if c["cluster_k"] > 1 else c["block_m"] * (c["block_n"] + 8) * 2
        return max(ring, epilogue) + self.ALIGN_SLACK      # the epilogue's tile reuses the ring

    def registers(self, problem, config):
        """Estimated registers per thread: the accumulators plus what ptxas adds (checked by
        tests/test_pointwise_compile.py)."""
        return config["block_n"] // config["warpgroups_n"] // 2 + 80

    def check(self, problem, config):
        if not self.applies(problem):
            return "the wgmma kernel is for float16 NHWC pointwise problems with C a multiple of 8"
        reason = self._check_space(config)
        if reason:
            return reason
        c = config
        if c["vec_x"] != 8 or c["vec_w"] != 8:
            return "wgmma operands are copied in 16-byte chunks (vec_x = vec_w = 8)"
        reason = self._check_vectors(problem, c)
        if reason:
            return reason
        n = c["block_n"] // c["warpgroups_n"]
        if c["block_n"] % c["warpgroups_n"] or n % 8 or n > self.MAX_WARPGROUP_N:
            return f"block_n={c['block_n']} over {c['warpgroups_n']} warpgroups is not an n of 8..{self.MAX_WARPGROUP_N}"
        k_tiles = ceil_div(problem.C, c["block_k"])
        if idle_in_cluster(k_tiles, c["cluster_k"]):
            return f"cluster_k={c['cluster_k']} blocks for {k_tiles} K slices leave some idle"
        share = ceil_div(k_tiles, c["cluster_k"])
        if c["stages"] > max(3, share):
            return f"stages={c['stages']} > {share} K slices per block (pruned)"
        return (resource_violation(self.threads(c), self.shared_bytes(problem, c), self.registers(problem, c),
                                   max_shared=MAX_DYNAMIC_SHARED_BYTES_SM90)
                or self._check_pruning(problem, c, 64, min_stages=3))

    def _default_candidates(self):
        for bn in (64, 32, 16):
            for stages in (4, 3):       # (the shared default_config's stages=1 fallback never fits: 3 at least)
                yield dict(block_m=64, block_n=bn, block_k=64, warpgroups_n=1, stages=stages, cluster_k=1)

    def launch(self, problem, config) -> Launch:
        p, c = problem, config
        tiles = ceil_div(p.N * p.H * p.W, c["block_m"]) * ceil_div(p.C_out, c["block_n"])
        return clustered(Launch(grid=(tiles, 1, 1), block=(self.threads(c), 1, 1), shared_mem=self.shared_bytes(p, c)),
                         c["cluster_k"])

    def template_params(self, problem, config):
        c = config
        return {"BLOCK_M": c["block_m"], "BLOCK_N": c["block_n"], "BLOCK_K": c["block_k"],
                "WG_N": c["warpgroups_n"], "WG_TILE_N": c["block_n"] // c["warpgroups_n"], "STAGES": c["stages"],
                "CLUSTER_K": c["cluster_k"], "VEC_Y": c["vec_y"]}


SIMT_FAMILY = SimtPointwise()
TC_FAMILY = TensorCorePointwise()
CLUSTER_FAMILY = ClusterPointwise()
STREAM_FAMILY = StreamingPointwise()
TF32_FAMILY = TF32Pointwise()
WGMMA_FAMILY = WgmmaPointwise()
FAMILIES = [SIMT_FAMILY, TC_FAMILY, CLUSTER_FAMILY, STREAM_FAMILY, TF32_FAMILY, WGMMA_FAMILY]
