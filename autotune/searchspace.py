"""Search spaces: every configuration of a kernel family for a problem, constraints applied before
anything is compiled."""
from __future__ import annotations

import itertools
import json

from .problem import Problem


def config_key(config: dict) -> str:
    """Canonical text of a configuration: the identity of a trial."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def all_configs(family, problem: Problem):
    space = family.space(problem)
    names = list(space)
    for values in itertools.product(*space.values()):
        yield dict(zip(names, values))


_VALID_CACHE: dict = {}


def valid_configs(family, problem: Problem) -> list[dict]:
    """Configurations that pass the family's constraints, in a stable order."""
    key = (family.name, problem)
    if key not in _VALID_CACHE:
        _VALID_CACHE[key] = [c for c in all_configs(family, problem) if family.check(problem, c) is None]
    return [dict(c) for c in _VALID_CACHE[key]]


def space_violation(space: dict, config: dict) -> str | None:
    """Why `config` is not a point of `space` (other parameters, or a value it does not offer), or None."""
    if set(config) != set(space):
        return f"parameters {sorted(config)} do not match {sorted(space)}"
    for name, value in config.items():
        if value not in space[name]:
            return f"{name}={value!r} is not among {space[name]}"
    return None


def invalid_reason(family, problem: Problem, config: dict) -> str | None:
    return space_violation(family.space(problem), config) or family.check(problem, config)


def nearest_valid(family, problem: Problem, config: dict, exclude=()) -> dict | None:
    """The valid configuration differing from `config` in the fewest parameters (first in the
    stable order on ties), skipping those whose config_key is in `exclude`; None if none is left.
    Lets a search whose proposal broke a constraint measure its closest legal neighbour instead."""
    best, best_diff = None, None
    for candidate in _VALID_CACHE.get((family.name, problem)) or valid_configs(family, problem):
        diff = sum(candidate[k] != config.get(k) for k in candidate)
        if (best_diff is None or diff < best_diff) and config_key(candidate) not in exclude:
            best, best_diff = candidate, diff
            if diff <= 1:
                break
    return dict(best) if best is not None else None
