"""Run the peer benchmarks and write their tables to ``benchmarks/RESULTS.md`` (README quotes it).

One command, in the environment that has the peer libraries next to the same torch (see
``bench_autoregressive.py`` for how to make it)::

    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/run_all.py [--quick] [--nll]

* default: the speed parts of every peer benchmark, timed interleaved (``_common.interleaved``) with
  ``--rounds`` rounds (151) per measure: about 10 minutes on one CPU thread of the course machine;
* ``--quick``: 5 rounds, to check that everything runs (under a minute; the spread is then wide);
* ``--nll``: also the long parts, training on the digits (``bench_coupling.py --nll``, 3000 steps
  per library: about 2 more minutes on one thread) and ``nll_peers.py`` (every library's MAF and
  Real-NVP on moons, 8 Gaussians, checkerboard and the digits, 3 seeds: about 25 more minutes).
  RESULTS.md as committed comes from ``run_all.py --nll``.

A script takes part when it exposes ``results(argv) -> list[_common.Table]``:
``bench_coupling.py`` (coupling flows against zuko, nflows, normflows) and
``bench_autoregressive.py`` (MAF against the same, and MAF sampling at p = 64 with the goals of
issue 15), ``bench_residual.py`` (residual flows against normflows; at most 31 rounds; with
``--nll`` it first trains both on moons and the digits, a few more minutes, and times the
trained models) and ``bench_sync.py`` (coursekit alone: training with per-step reads back from the
device against the deferred reads of its guard; at most 31 rounds). RESULTS.md says which scripts
were left out (a missing peer library, a failure) and why.
The other scripts of ``benchmarks/`` (``bench_score.py``, ``bench_grading.py``,
``digits_coupling.py``) are studies of coursekit alone, quoted by the chapters, not comparisons;
``gpu_check.py`` is the prepared run of the checks that need a GPU.

RESULTS.md starts with the date, the machine (CPU model, logical CPUs, threads used, load
average before and after), Python, torch and library versions, then one markdown table per
benchmark: every library's median rate and, for each peer, the median of the per-round speed
ratios coursekit / peer with the interquartile range and a verdict (faster, slower, unresolved).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

PEERS = ("zuko", "nflows", "normflows")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    """The checked-out commit of the repository (read only), and whether coursekit/ differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "coursekit"], cwd=ROOT,
                               capture_output=True, timeout=10, check=False).returncode
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    if not head:
        return "unknown commit"
    return f"commit {head}" + (", coursekit/ with uncommitted changes" if dirty else "")


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def plan(args) -> list[tuple[str, list[str]]]:
    """(script, argv) of every benchmark run."""
    common = ["--threads", str(args.threads), "--device", args.device]
    if args.quick:
        rounds = ["--rounds", "5", "--min-seconds", "0.02"]
        sample = ["--sample-rounds", "5"]
    else:
        rounds = ["--rounds", str(args.rounds), "--min-seconds", "0.1"]
        sample = ["--sample-rounds", str(args.rounds)]
    coupling = common + rounds + (["--nll"] + (["--nll-steps", "300"] if args.quick else []) if args.nll else [])
    runs = [("bench_coupling", coupling), ("bench_autoregressive", common + rounds + sample)]
    residual = common + (["--rounds", "3", "--steps-moons", "100", "--steps-digits", "100"] if args.quick
                         else ["--rounds", str(min(args.rounds, 31))])
    runs.append(("bench_residual", residual if args.nll else residual + ["--no-nll"]))
    runs.append(("bench_sync", common + ["--rounds", "3" if args.quick else str(min(args.rounds, 31))]))
    if args.nll:
        quick_nll = ["--seeds", "0", "--steps-2d", "200", "--steps-digits", "200"] if args.quick else []
        runs.append(("nll_peers", common + quick_nll))
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds: checks that everything runs")
    ap.add_argument("--nll", action="store_true", help="also the long parts (training on the digits)")
    ap.add_argument("--rounds", type=int, default=151, help="interleaved rounds per measure")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = _load()
    sections, left_out = [], []
    for script, script_argv in plan(args):
        if not (HERE / f"{script}.py").exists():
            left_out.append(f"`{script}.py`: not in benchmarks/")
            continue
        try:
            module = importlib.import_module(script)
        except Exception as err:  # a script being edited, a missing peer library
            left_out.append(f"`{script}.py`: import failed ({type(err).__name__}: {err})")
            continue
        if not callable(getattr(module, "results", None)):
            left_out.append(f"`{script}.py`: exposes no `results(argv)` returning tables (it prints its own; "
                            "run it by hand)")
            continue
        print(f"== {script}.py {' '.join(script_argv)}", flush=True)
        t0 = time.perf_counter()
        try:
            tables = module.results(script_argv)
        except Exception:
            traceback.print_exc()
            left_out.append(f"`{script}.py`: failed (traceback on the console)")
            continue
        seconds = time.perf_counter() - t0
        for t in tables:
            print(t.text(), flush=True)
        sections.append((script, script_argv, seconds, tables))

    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    cmd = f"OMP_NUM_THREADS={omp} python benchmarks/run_all.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# Peer benchmarks",
        "",
        (f"Written by `{cmd}` (do not edit by hand; rerun it). Figures from one machine, shared with other "
         "jobs: the libraries are timed interleaved, round by round, so that each per-round ratio compares runs "
         "made under nearly the same load."),
        "",
        "| | |",
        "|---|---|",
        f"| date | {started:%Y-%m-%d %H:%M} UTC |",
        f"| machine | {_cpu_model()}, {os.cpu_count()} logical CPUs ({platform.machine()}, {platform.system()}) |",
        f"| threads used | {torch.get_num_threads()} (torch), OMP_NUM_THREADS={omp} |",
        f"| load average (1, 5, 15 min) | before {load_before}; after {_load()} |",
        f"| Python | {platform.python_version()} |",
        f"| torch | {torch.__version__} |",
        f"| coursekit | {_version('coursekit')} ({_commit()}) |",
        *(f"| {p} | {_version(p)} |" for p in PEERS),
        "",
        ("How to read the tables: rates are medians over the rounds; a ratio is the median over the rounds of "
         "coursekit's speed / the library's [interquartile range of the per-round ratios]; > 1 means coursekit is "
         "faster; the verdict is 'faster' or 'slower' only when the whole interquartile range is on one side of "
         "1, 'unresolved' otherwise. What differs between the libraries' models is in each script's docstring."),
        "",
    ]
    for script, script_argv, seconds, tables in sections:
        lines += [f"## `benchmarks/{script}.py`", "",
                  f"Arguments: `{' '.join(script_argv)}`; {seconds / 60:.1f} minutes.", ""]
        lines += [t.markdown() for t in tables]
    if left_out:
        lines += ["## Left out", "", *(f"* {item}" for item in left_out), ""]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
