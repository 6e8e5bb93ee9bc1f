"""The ``coursekit`` command: ``sync``, ``grade`` and ``exercises`` (see ``coursekit --help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _find_root(start: Path) -> Path:
    for p in [start, *start.parents]:
        if (p / "_config.yml").exists() and (p / "solutions").is_dir():
            return p
    raise SystemExit(f"error: {start} is not inside the course repository (no _config.yml and solutions/ above it)")


def _cmd_sync(args) -> int:
    from .notebooks import MarkerError, sync

    root = Path(args.root).resolve() if args.root else _find_root(Path.cwd())
    try:
        report = sync(root, check=args.check)
    except MarkerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        for f in report.stale:
            print(f"stale: {f}")
        for f in report.orphans:
            print(f"orphan (no source notebook): {f}")
        if not report.ok:
            print("Generated notebooks are out of date: run `make sync` (coursekit sync) and commit the result.")
            return 1
        print("exercises/ and .ipynb copies are up to date.")
        return 0
    for f in report.written:
        print(f"wrote {f}")
    for f in report.orphans:
        print(f"warning: {f} has no source notebook; delete it if it is left over")
    if not report.written:
        print("everything was up to date.")
    return 0


def _cmd_grade(args) -> int:
    from .grader import GradingError, format_report, grade

    status = 0
    for nb in args.notebooks:
        try:
            report = grade(nb, timeout=args.timeout, cell_timeout=args.cell_timeout, mode=args.mode)
        except GradingError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 2
            continue
        print(report.to_json() if args.json else format_report(report))
    return status


def _cmd_exercises(args) -> int:
    from .registry import registry

    for ex in registry().values():
        print(f"{ex.id:<6} {ex.points:>4g} pt  {ex.notebook:<28} {ex.title}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coursekit", description="Tools of the generative models course.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sync", help="generate exercises/ from solutions/ and the .ipynb copies of every notebook")
    p.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    p.add_argument("--root", help="repository root (default: found from the current folder)")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("grade", help="run student notebooks and print a table of the graded exercises")
    p.add_argument("notebooks", nargs="+", help="student notebook(s), .ipynb or jupytext .md")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for a whole notebook (default 600)")
    p.add_argument("--cell-timeout", type=float, default=None, help="seconds allowed for one cell (default: no extra limit)")
    p.add_argument("--mode", default="fast", choices=["fast", "full"], help="COURSEKIT_MODE for the run (default fast)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("exercises", help="list the graded exercises")
    p.set_defaults(func=_cmd_exercises)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
