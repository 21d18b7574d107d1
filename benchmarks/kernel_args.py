"""The command line of the benchmarks that time one kernel configuration: FAMILY PROBLEM_KEY CONFIG_JSON."""
import argparse
import json

from autotune import kernels
from autotune.store import Store


def parse(doc: str, extra=lambda parser: None):
    """(args, problem, family, config); the problem comes from the database ($AUTOTUNE_DB or the shipped
    one), `extra(parser)` adds a script's own arguments."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("problem", help="a problem key of the database")
    parser.add_argument("config", help="the configuration, JSON")
    extra(parser)
    args = parser.parse_args()
    problem = Store(None, readonly=True).problem(args.problem)
    return args, problem, kernels.family_named(args.family), json.loads(args.config)
