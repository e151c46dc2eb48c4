"""`search`: the command line. Each command is a thin function over the public API;
a user error (ValueError and subclasses) becomes one line on stderr and exit 1."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from objectives import PRESETS, ArchConfig, count_macs, count_params, get_preset
from objectives.counting import check_budget

DEFAULT_BUDGET = 5_000_000


def _budget(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def cmd_presets(args: argparse.Namespace) -> int:
    rows = [{"name": name, "params": count_params(arch), "macs": count_macs(arch),
             "within_budget": count_params(arch) <= args.budget} for name, arch in PRESETS.items()]
    if args.json:
        print(json.dumps({"budget": args.budget, "presets": rows}, indent=2))
        return 0
    print(f"{'preset':<20} {'params':>12} {'MMACs':>9}  within {args.budget:,}")
    for r in rows:
        print(f"{r['name']:<20} {r['params']:>12,} {r['macs'] / 1e6:>9.1f}  {'yes' if r['within_budget'] else 'NO'}")
    return 0


def cmd_arch(args: argparse.Namespace) -> int:
    if args.preset:
        arch = get_preset(args.preset)
    else:
        try:
            arch = ArchConfig.from_json(Path(args.file).read_text())
        except OSError as e:
            raise ValueError(f"{args.file}: cannot read ({e.strerror})") from None
    params, macs = count_params(arch), count_macs(arch)
    print(json.dumps({"architecture": arch.to_dict(), "params": params, "macs": macs,
                      "budget": args.budget}, indent=2))
    check_budget(arch, args.budget)  # raises OverBudgetError: one line, exit 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="search",
        description="Search ResNet architectures and training recipes for CIFAR-10 within a "
                    "parameter budget, on Optuna studies.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("presets", help="list known architectures: exact parameters, MACs, within budget?")
    s.add_argument("--budget", type=_budget, default=DEFAULT_BUDGET, help="trainable-parameter limit (default 5,000,000)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("arch", help="show one architecture's JSON, exact size and cost; exit 1 if over budget or invalid")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help=f"one of: {', '.join(PRESETS)}")
    src.add_argument("--file", help="a JSON file holding an architecture (the format this command prints)")
    s.add_argument("--budget", type=_budget, default=DEFAULT_BUDGET, help="trainable-parameter limit (default 5,000,000)")
    s.set_defaults(func=cmd_arch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ValueError as e:
        print(f"search {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
