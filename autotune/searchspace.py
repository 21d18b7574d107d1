"""Search spaces: every configuration of a kernel family for a problem, constraints applied before
anything is compiled."""
from __future__ import annotations

import functools
import itertools
import json

from . import kernels
from .problem import Problem


def config_key(config: dict) -> str:
    """Canonical text of a configuration: the identity of a trial."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def all_configs(family, problem: Problem):
    space = family.space(problem)
    names = list(space)
    for values in itertools.product(*space.values()):
        yield dict(zip(names, values))


@functools.lru_cache(maxsize=256)
def _valid(family_name: str, problem: Problem) -> tuple:
    family = kernels.family_named(family_name)
    return tuple(config_key(c) for c in all_configs(family, problem) if family.check(problem, c) is None)


def valid_configs(family, problem: Problem) -> list[dict]:
    """Configurations that pass the family's constraints, in a stable order."""
    return [json.loads(k) for k in _valid(family.name, problem)]


def invalid_reason(family, problem: Problem, config: dict) -> str | None:
    space = family.space(problem)
    if set(config) != set(space):
        return f"parameters {sorted(config)} do not match {sorted(space)}"
    for name, value in config.items():
        if value not in space[name]:
            return f"{name}={value!r} is not among {space[name]}"
    return family.check(problem, config)
