"""Where a kernel's time goes: time one configuration with statements of its source cut out, one at a
time and all together (the outputs are then wrong: timing only). Each cut names a statement by a
substring that occurs once in the rendered source, at the statement's start; the statement becomes
`if (N > 0) {} else <statement>`, so it never runs but the compiler cannot drop it. E.g. session 14's
phases of ir_register_dw:

    python3 benchmarks/phase_cuts.py ir_register_dw "ir t6 k3 s2 p1 N16 C16->24 112x112 relu6/none bias float16 nhwc" \\
        '{"min_blocks":1,"out_h":12,"tiles_per_block":1,"warps":3,"weights":"global"}' \\
        "x staging=if (blockIdx.x < tiles) stage_tile_x(" "expand+dw=for (int chunk = warp;" \\
        projection=$'if constexpr (WEIGHTS_SHARED)\\n            project_tc<'

(a marker may span lines: the projection's if-chain starts with a test that occurs more than once).

Times are per launch, CUDA-graph replay with programmatic dependent launch, as lookup runs kernels.
"""
from autotune import codegen, compiler, runner
from kernel_args import parse

SKIP = "if (N > 0) {} else "


def cut(code: str, marker: str) -> str:
    if code.count(marker) != 1:
        raise SystemExit(f"the marker occurs {code.count(marker)} times in the source, not once: {marker!r}")
    return code.replace(marker, SKIP + marker)


def main():
    args, problem, family, config = parse(__doc__, lambda p: p.add_argument("cuts", nargs="+", help="NAME=MARKER"))
    cuts = dict(c.split("=", 1) for c in args.cuts)
    variants = {"whole kernel": [], **{f"without {n}": [m] for n, m in cuts.items()}, "without all": list(cuts.values())}
    data = runner.ProblemData.create(problem, seed=1)
    launch = family.launch(problem, config)
    source = codegen.render(family, problem, config).code
    for name, markers in variants.items():
        code = source
        for m in markers:
            code = cut(code, m)
        fn = runner.load_function(compiler.compile_code(code, "sm_90"), family.entry)
        print(f"{name:30s} {runner.time_kernel(fn, launch, data, programmatic=True):8.2f} us", flush=True)


if __name__ == "__main__":
    main()
