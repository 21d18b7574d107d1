"""Run the shipped best kernel of one problem (optionally of one family) a few times, e.g. under ncu:

    ncu --clock-control none -k dw_conv2d --launch-skip 2 --launch-count 1 \\
        python3 benchmarks/run_best.py "dw k3 s1 p1 N16 C32 112x112 relu6 bias float16 nhwc" [FAMILY]
"""
import sys

import cupy as cp
from autotune.store import Store
from autotune import kernels, codegen, compiler, runner
store = Store(None, readonly=True)          # $AUTOTUNE_DB or the shipped database
gpu = store.gpus()[0]["id"]
key = sys.argv[1]
fam_name = sys.argv[2] if len(sys.argv) > 2 else None
p = store.problem(key)
if fam_name:
    rows = [t for t in store.trials(gpu, key) if t["family"] == fam_name and t["status"] == "ok"]
    best = min(rows, key=lambda t: t["time_us"])
else:
    best = store.best(gpu, key)
fam = kernels.family_named(best["family"])
print(key, best["family"], best["config"], best["time_us"], flush=True)
b = compiler.compile_code(codegen.render(fam, p, best["config"]).code, "sm_90")
fn = runner.load_function(b, fam.entry)
data = runner.ProblemData.create(p, seed=0)
L = fam.launch(p, best["config"])
print("verify", runner.verify(fn, L, data))
for i in range(4):
    x, w, bb, y = data.sets[i % len(data.sets)]
    runner.launch(fn, L, x, w, bb, y, p)
cp.cuda.Device().synchronize()
