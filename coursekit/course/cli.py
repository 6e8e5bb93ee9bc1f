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
    from .colab import ConversionError
    from .notebooks import MarkerError, ReleaseError, sync

    root = Path(args.root).resolve() if args.root else _find_root(Path.cwd())
    try:
        report = sync(root, check=args.check, release=args.release)
    except ReleaseError as err:
        print(f"error: {err}\nSee CONTRIBUTING.md, 'Releasing'. Nothing was written.", file=sys.stderr)
        return 3
    except (MarkerError, ConversionError) as err:
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
    import json

    from .grader import GradingError, format_report, grade
    from .gradebook import grade_class, summary, write_csv
    from .sandbox import Limits, bwrap_available

    if args.checks:  # extra check modules (a course of one's own, the tests' demo exercises)
        import importlib.util

        for i, file in enumerate(args.checks):
            spec = importlib.util.spec_from_file_location(Path(file).stem, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
    limits = Limits(timeout=args.timeout, cell_timeout=args.cell_timeout, memory=int(args.memory * (1 << 20)))
    sandbox = {"auto": None, "require": True, "off": False}[args.sandbox]
    if sandbox is not False and not bwrap_available():
        msg = ("bubblewrap (bwrap) is missing or does not work here: notebooks run WITHOUT a sandbox, with your "
               "access to files and network (Debian/Ubuntu: apt-get install bubblewrap)")
        if sandbox:
            print(f"error: {msg}", file=sys.stderr)
            return 2
        print(f"warning: {msg}", file=sys.stderr)
    kwargs = dict(assignment=args.assignment, exercises_dir=args.exercises, limits=limits, mode=args.mode,
                  sandbox=sandbox)
    single = len(args.notebooks) == 1 and not Path(args.notebooks[0]).is_dir() and not args.out
    if single:
        try:
            report = grade(args.notebooks[0], **kwargs)
        except GradingError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(report.to_json() if args.json else format_report(report))
        return 0
    reports = grade_class(args.notebooks, jobs=args.jobs, progress=None if not args.json else False, **kwargs)
    if args.out:
        write_csv(reports, args.out)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    for r in reports:
        state = f"{r.earned:g}/{r.total:g}" if not r.error else "not graded"
        print(f"{state:>10}  {r.notebook}")
    print()
    print(summary(reports))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


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
    p.add_argument("--release", action="store_true",
                   help="fail unless _config.yml is publishable: a real repository URL and a pinned coursekit: ref: tag")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("grade", help="grade student notebooks: a table for one, a CSV gradebook and a summary for a class",
                       description="Grade submissions against their assignment (exercises/NAME.md of the course): "
                                   "each runs sandboxed in a throwaway copy of its folder; only the grader's own "
                                   "checks, restored from the assignment, count.")
    p.add_argument("notebooks", nargs="+", help="notebook(s) (.ipynb or jupytext .md) or folder(s) of submissions")
    p.add_argument("--out", help="write the class gradebook to this CSV file")
    p.add_argument("--assignment", help="the assignment (e.g. ex04_coupling), default: from each file's name")
    p.add_argument("--exercises", help="the course's exercises/ folder (default: found from the current folder)")
    p.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: one per core)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for a whole notebook (default 600)")
    p.add_argument("--cell-timeout", type=float, default=120.0, help="seconds allowed for one cell (default 120)")
    p.add_argument("--memory", type=float, default=4096, help="MiB of memory (address space) per notebook (default 4096)")
    p.add_argument("--sandbox", default="auto", choices=["auto", "require", "off"],
                   help="bubblewrap sandbox: use when available (default), require it, or never")
    p.add_argument("--checks", action="append", default=[], help="a Python file registering extra exercises")
    p.add_argument("--mode", default="fast", choices=["fast", "full"], help="COURSEKIT_MODE for the run (default fast)")
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("exercises", help="list the graded exercises")
    p.set_defaults(func=_cmd_exercises)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
