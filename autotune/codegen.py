"""Code generation: a kernel family's Jinja2 template + one configuration -> CUDA source."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jinja2

from .problem import Problem

CUDA_TYPES = {"float32": "float", "float16": "__half"}


def templates_dir() -> Path:
    """templates/ of a source checkout, or the copy packed into an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("autotune's templates/ directory is missing from this installation")


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,   # a missing parameter is an error, not an empty string
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


@dataclass(frozen=True)
class KernelSource:
    family: str
    entry: str
    code: str


def common_params(problem: Problem) -> dict:
    """Compile-time constants every template receives."""
    return {
        "T": CUDA_TYPES[problem.dtype], "DTYPE": problem.dtype, "LAYOUT": problem.layout,
        "KSIZE": problem.k, "STRIDE": problem.stride, "PAD": problem.padding,
        "HAS_BIAS": problem.bias, "ACT": problem.act, "ACT2": problem.act2, "ADD_RESIDUAL": False,
    }


def render(family, problem: Problem, config: dict, add_residual: bool = False) -> KernelSource:
    """The kernel's source. With add_residual (families with `residual_epilogue`), it takes a 14th
    argument laid out like y and adds it to the output: the last 1x1 of an inverted residual run
    stage by stage, with the tuned configuration of the plain problem."""
    if add_residual and not getattr(family, "residual_epilogue", False):
        raise ValueError(f"{family.name} has no residual epilogue")
    params = common_params(problem)
    params.update(family.template_params(problem, config))
    params["ADD_RESIDUAL"] = add_residual
    params["ENTRY"] = family.entry
    code = _environment().get_template(family.template).render(**params)
    return KernelSource(family.name, family.entry, code)
