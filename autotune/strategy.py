"""Search strategy: one Optuna study per (GPU, problem), seeded TPE by default.

The study's parameters are the kernel family plus that family's parameters (all categorical). A
proposal that breaks the family's constraints is recorded as invalid without being compiled, and
told to Optuna with a penalty time so TPE learns to avoid it. Resuming rebuilds the study from the trials
already in the database: a configuration measured before is never measured again.
"""
from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass, field

import optuna

from . import codegen, store as st
from .compiler import CompileError
from .problem import Problem, shape_distance
from .searchspace import config_key, invalid_reason, nearest_valid, space_violation, valid_configs
from .workers import WorkerLost

PENALTY_US = 1e7          # objective told for configurations that cannot run: far worse than any
MAX_SPILL_BYTES = 64      # a few spilled bytes can be harmless; more means a bad register estimate
BATCH = 8                 # proposals compiled together (TPE's constant liar keeps them apart)

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def problem_seed(problem: Problem, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}:{problem.key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _distributions(families, problem) -> dict:
    dists = {"family": optuna.distributions.CategoricalDistribution([f.name for f in families])}
    for fam in families:
        for name, values in fam.space(problem).items():
            dists[f"{fam.name}.{name}"] = optuna.distributions.CategoricalDistribution(list(values))
    return dists


def _params(family, config) -> dict:
    return {"family": family.name, **{f"{family.name}.{k}": v for k, v in config.items()}}


@dataclass
class TuneResult:
    problem: Problem
    measured: int = 0          # distinct configurations verified and timed, earlier runs included
    new: int = 0               # ... measured by this run
    invalid: int = 0
    failed: int = 0
    best_us: float | None = None
    best: dict | None = field(default=None)


def transfer_seeds(store: st.Store, gpu: str, problem: Problem, families, limit: int = 3) -> list:
    """[(family, config)]: the best configurations of the most similar other problems tuned on this
    GPU (same op, kernel size, stride, dtype and layout; nearest sizes first) that are valid here.
    TPE starts from what worked next door instead of rediscovering it within its budget."""
    by_name = {f.name: f for f in families}
    same = ("op", "k", "stride", "dtype", "layout")
    rows = [r for r in store.best_rows(gpu) if r["problem"] != problem.key and r["family"] in by_name
            and all(r[f] == getattr(problem, f) for f in same)]
    seeds, keys = [], set()
    for r in sorted(rows, key=lambda r: shape_distance(r, problem)):
        fam, config = by_name[r["family"]], r["config"]
        key = (fam.name, config_key(config))
        if key not in keys and invalid_reason(fam, problem, config) is None:
            seeds.append((fam, config))
            keys.add(key)
            if len(seeds) == limit:
                break
    return seeds


def tune(problem: Problem, families, gpu: str, store: st.Store, measure, compiler, arch: str,
         trials: int, timeout_s: float | None = None, seed: int = 0, progress=None, seeds=()) -> TuneResult:
    """Tune one problem until `trials` distinct configurations have been measured (counting those
    measured in earlier runs), the valid space is exhausted, or `timeout_s` passes. `seeds`
    ([(family, config)], e.g. transfer_seeds) are measured first, after the default configuration.

    measure(family, config, binary) -> trial record dict (status, time_us, error, max_error);
    it may raise WorkerLost. compiler: a ParallelCompiler.
    """
    by_name = {f.name: f for f in families}
    sampler = optuna.samplers.TPESampler(seed=problem_seed(problem, seed), multivariate=True,
                                         group=True, constant_liar=True,
                                         n_startup_trials=min(10, max(3, trials // 4)))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    dists = _distributions(families, problem)
    result = TuneResult(problem)
    seen = set()
    space_size = sum(len(valid_configs(f, problem)) for f in families)

    for row in store.trials(gpu, problem.key):                    # resume
        fam = by_name.get(row["family"])
        if fam is None or space_violation(fam.space(problem), row["config"]):
            continue           # another family version's trial: kept in the store, not told to TPE
        seen.add((fam.name, config_key(row["config"])))
        ok = row["status"] == st.OK
        study.add_trial(_finished_trial(dists, fam, row["config"], row["time_us"] if ok else None))
        result.measured += ok
        result.invalid += row["status"] == st.INVALID
        result.failed += row["status"] not in (st.OK, st.INVALID)
    _refresh_best(result, store, gpu, problem)

    # Every family's default (a safe start, and a fair first sample of each), then the seeds.
    for fam, config in [*((f, f.default_config(problem)) for f in families), *seeds]:
        if (fam.name, config_key(config)) not in seen:
            study.enqueue_trial(_params(fam, config))

    start = time.monotonic()
    idle_asks = 0
    rotation = 0
    while result.measured < min(trials, space_size) and idle_asks < 200:
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            break
        batch = []
        for _ in range(BATCH):
            if len(families) > 1 and result.measured + len(batch) < trials // 2:
                # First half of the budget: families take turns, so TPE cannot write one off
                # on the strength of a few unlucky samples; then it allocates freely.
                study.enqueue_trial({"family": families[rotation % len(families)].name})
                rotation += 1
            trial = study.ask()
            fam = by_name[trial.suggest_categorical("family", [f.name for f in families])]
            config = {name: trial.suggest_categorical(f"{fam.name}.{name}", list(values))
                      for name, values in fam.space(problem).items()}
            key = (fam.name, config_key(config))
            reason = fam.check(problem, config)
            if key in seen:                     # measured before: tell the known outcome, skip it
                idle_asks += 1
                known = store.find_trial(gpu, problem, fam.name, config)
                ok = known is not None and known["status"] == st.OK
                _tell(study, trial, known["time_us"] if ok else None)
            elif reason:
                seen.add(key)
                result.invalid += 1
                idle_asks += 1
                store.add_trial(gpu, problem, fam.name, config, st.INVALID, error=reason,
                                trial_number=trial.number)
                _tell(study, trial, None)
                # Constraints leave some families only a few percent of their space: measure the
                # proposal's closest legal neighbour instead of hoping TPE stumbles on one.
                neighbour = nearest_valid(fam, problem, config,
                                          exclude={k for f, k in seen if f == fam.name})
                if neighbour is not None:
                    seen.add((fam.name, config_key(neighbour)))
                    batch.append((None, fam, neighbour))
            else:
                seen.add(key)
                batch.append((trial, fam, config))
            if len(batch) + result.measured >= trials or len(batch) >= BATCH:
                break
        if not batch:
            continue
        idle_asks = 0
        sources = [codegen.render(fam, problem, config).code for _, fam, config in batch]
        binaries = compiler.compile(sources, arch)
        for (trial, fam, config), binary in zip(batch, binaries):
            record = _run_one(measure, fam, config, binary)
            store.add_trial(gpu, problem, fam.name, config, trial_number=trial.number if trial else None, **record)
            ok = record["status"] == st.OK
            result.measured += ok
            result.new += ok
            result.failed += not ok
            value = record["time_us"] if ok else None
            if trial is not None:
                _tell(study, trial, value)
            else:                           # a repaired proposal: teach TPE what it measured
                study.add_trial(_finished_trial(dists, fam, config, value))
            _refresh_best(result, store, gpu, problem)
            if progress:
                progress(result)
    return result


def _run_one(measure, fam, config, binary) -> dict:
    if isinstance(binary, CompileError):
        return {"status": st.COMPILE_ERROR, "error": str(binary)[-2000:]}
    resources = {"registers": binary.registers, "spill_bytes": binary.spill_bytes}
    if (binary.spill_bytes or 0) > MAX_SPILL_BYTES:   # the estimate let it through; don't time it
        return {"status": st.INVALID, "error": f"spills {binary.spill_bytes} bytes to local memory", **resources}
    try:
        record = measure(fam, config, binary)
    except WorkerLost as exc:
        return {"status": st.FAILED, "error": str(exc), **resources}
    except RuntimeError as exc:
        return {"status": st.FAILED, "error": str(exc)[-2000:], **resources}
    return {**record, **resources}


def _finished_trial(dists, fam, config, time_us):
    """A trial measured outside study.ask(): on resume, or a repaired proposal."""
    params = _params(fam, config)
    return optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                     value=PENALTY_US if time_us is None else time_us)


def _tell(study, trial, time_us):
    study.tell(trial, PENALTY_US if time_us is None else time_us)


def _refresh_best(result: TuneResult, store, gpu, problem):
    best = store.best(gpu, problem.key)
    if best:
        result.best_us, result.best = best["time_us"], best
