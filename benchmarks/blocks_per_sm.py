"""How a kernel's time scales with the blocks an SM holds: one configuration timed at smaller batches
(fewer blocks: a lone block's latency) and, at the problem's batch, with its dynamic shared memory
padded so that at most k blocks fit on an SM (k waves where one fitted). Separates a kernel bound by
one block's latency from one bound by what an SM can issue:

    python3 benchmarks/blocks_per_sm.py ir_register_dw "ir t6 k3 s2 p1 N16 C16->24 112x112 relu6/none bias float16 nhwc" \\
        '{"min_blocks":1,"out_h":12,"tiles_per_block":1,"warps":3,"weights":"global"}'

Times are per launch, CUDA-graph replay with programmatic dependent launch, as lookup runs kernels.
"""
import dataclasses

from autotune import codegen, compiler, runner
from kernel_args import parse

SHARED_PER_SM = 228 * 1024      # Hopper; each block also reserves 1 KB


def main():
    args, full, family, config = parse(__doc__, lambda p: p.add_argument(
        "--blocks", default="1,2,3,4,6,8", help="blocks per SM to allow at the full batch"))
    batches = sorted({n for n in (1, 2, 4, 8, full.N) if n <= full.N})
    for n in batches:
        problem = full.replace(N=n)
        data = runner.ProblemData.create(problem, seed=1)
        binary = compiler.compile_code(codegen.render(family, problem, config).code, "sm_90")
        fn = runner.load_function(binary, family.entry)
        launch = family.launch(problem, config)
        ok, err = runner.verify(fn, launch, data)
        limits = [None] + ([int(k) for k in args.blocks.split(",")] if n == full.N else [])
        for k in limits:
            padded = launch if k is None else dataclasses.replace(
                launch, shared_mem=max(launch.shared_mem, SHARED_PER_SM // k - 2048))
            t = runner.time_kernel(fn, padded, data, programmatic=True)
            print(f"N={n:3d} grid={launch.grid} block={launch.block} registers={binary.registers} "
                  f"blocks/SM<={k or '-'}: {t:8.2f} us (verified: {ok}, worst error / tolerance {err:.3f})", flush=True)


if __name__ == "__main__":
    main()
