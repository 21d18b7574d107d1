"""The figures the tuning-pipeline issue holds us to, computed from a sweep's database (all times
in it come from one run on one GPU).

    python3 benchmarks/bars.py [--db tuned_db/autotune.db]
"""
import argparse
import statistics

from autotune.store import Store
from autotune.sweep import summary_row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    args = ap.parse_args()
    store = Store(args.db, readonly=True)
    for gpu in store.gpus():
        rows = [summary_row(store, gpu["id"], store.problem(r["problem"]))
                for r in store.db.query("select problem from best where gpu = ?", [gpu["id"]])]
        print(f"== {gpu['id']}, copy bandwidth {gpu['copy_bandwidth'] / 1e9:.0f} GB/s")
        groups = {}
        for r in rows:
            p = r.problem
            groups.setdefault((p.op, p.N, p.dtype + (" tf32" if p.tf32 else ""), p.layout), []).append(r)
        print(f"{'op':4s} {'N':>3s} {'dtype':12s} {'layout':6s} {'n':>3s} {'median x cuDNN':>15s} "
              f"{'median x stronger peer':>23s} {'min x stronger':>15s} {'median floor frac':>18s}")
        for (op, n, dtype, layout), rs in sorted(groups.items()):
            rs = [r for r in rs if r.best_us]
            sp = [r.speedup for r in rs if r.speedup]
            ss = [r.speedup_vs_stronger for r in rs if r.speedup_vs_stronger]
            ff = [r.floor_fraction for r in rs]
            print(f"{op:4s} {n:3d} {dtype:12s} {layout:6s} {len(rs):3d} "
                  f"{statistics.median(sp) if sp else float('nan'):14.2f}x "
                  f"{statistics.median(ss) if ss else float('nan'):22.2f}x "
                  f"{min(ss) if ss else float('nan'):14.2f}x {statistics.median(ff):18.2f}")
        print("\nlarge depthwise layers at batch 16 (fraction of copy bandwidth):")
        for r in rows:
            p = r.problem
            if p.op == "dw" and p.N == 16 and p.H in (112, 56):
                print(f"  {p.key:52s} {r.best_us:7.2f} us  floor {r.floor_us:6.2f} us  {r.floor_fraction:5.2f}")


if __name__ == "__main__":
    main()
