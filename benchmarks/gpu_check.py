"""The checks that need a GPU, as one prepared run for a session that is lent one (issue 15).

What it does, each part in its own process with its own time limit, so that one run fits a short
lease and a failure in one part leaves the others' results:

1. executes the chapters' notebooks (``lectures/*.ipynb``, the files Colab opens) in full mode
   (``COURSEKIT_MODE=full``) on the GPU, cell by cell in one namespace, without Jupyter: the
   set-up cell is skipped (it would install coursekit from GitHub; the checkout is on the path),
   ``glue`` records the numbers the prose quotes, plots go to a non-interactive backend. Per
   chapter: seconds, the cell that failed with its error, or the cells left when time ran out;
2. times MAF sampling on the device (``bench_autoregressive.py --only sampling``, ``--only
   sweep``: where kernel-launch latency dominates and at which batch the incremental sampler
   comes within 3x of the IAF, and ``--only blocks``: whether the solver's blocks of steps, which
   add three products per layer per block, pay there too) and the training loops' deferred reads
   against per-step reads (``bench_sync.py``). The peer libraries are timed too where installed.

It writes ``gpu_check.md`` (and ``gpu_check.json``) into ``--out``. Nothing beyond what the
device machine has is needed (torch, numpy, matplotlib, scikit-learn, tqdm). On the device
machine, from the repository's root::

    python3 benchmarks/gpu_check.py --out "$OUT"        # about 9 minutes at most: run with timeout_s 600

Here, to check the script itself (fast mode, CPU, a few seconds per chapter)::

    python3 benchmarks/gpu_check.py --out /tmp/gpu_check --mode fast --device cpu --chapters 05 --no-bench
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP_MARK = "_install_coursekit"  # the set-up cell that `coursekit sync` writes at the top


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return [c for c in cells if SETUP_MARK not in c]


def run_one(path: Path, deadline: float) -> dict:
    """Execute one notebook's code cells here (called in a child process)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import coursekit.book

    glued: dict = {}
    coursekit.book.glue = lambda name, value: glued.__setitem__(name, coursekit.book._plain(value))
    namespace = {"__name__": "__main__"}
    cells, times = _code_cells(path), []
    record = {"notebook": path.name, "cells": len(cells), "glued": glued, "cell_seconds": times}
    for i, source in enumerate(cells):
        if time.monotonic() > deadline:
            record["stopped"] = f"time budget spent before cell {i + 1} of {len(cells)}"
            break
        start = time.perf_counter()
        try:
            exec(compile(source, f"{path.name}, code cell {i + 1}", "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 - reported, not raised: the other chapters go on
            record["error"] = f"cell {i + 1}: {type(err).__name__}: {err}"
            record["traceback"] = traceback.format_exc(limit=6)
            break
        finally:
            times.append(round(time.perf_counter() - start, 2))
            plt.close("all")
    record["seconds"] = round(sum(times), 1)
    return record


def _child(cmd: list[str], env: dict, timeout: float) -> tuple[int | str, str]:
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        return done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return "timeout", out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check.md and gpu_check.json")
    ap.add_argument("--chapters", default="05,04b,04", help="prefixes of lectures/*.ipynb, run in this order")
    ap.add_argument("--mode", default="full", choices=["fast", "full"])
    ap.add_argument("--device", default="cuda", help="what the benchmarks time on (the notebooks pick the GPU)")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds for all the notebooks together")
    ap.add_argument("--bench-budget", type=float, default=60.0, help="seconds for each benchmark")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this notebook and print its record
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print("RECORD " + json.dumps(run_one(Path(args.one), args.deadline)))
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COURSEKIT_MODE=args.mode, MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    import torch

    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else "no CUDA device", "mode": args.mode, "notebooks": [], "benchmarks": {}}
    end = time.monotonic() + args.budget
    for prefix in filter(None, args.chapters.split(",")):
        paths = sorted((ROOT / "lectures").glob(f"{prefix}_*.ipynb"))
        if not paths:
            report["notebooks"].append({"notebook": prefix, "error": "no lectures/<prefix>_*.ipynb"})
            continue
        left = end - time.monotonic()
        if left <= 5:
            report["notebooks"].append({"notebook": paths[0].name, "stopped": "time budget spent"})
            continue
        # the child stops between cells at its deadline; the timeout catches a cell that runs on
        code, text = _child([sys.executable, __file__, "--out", str(out), "--one", str(paths[0]),
                             "--deadline", str(time.monotonic() + left)], env, left + 30)
        lines = [ln for ln in text.splitlines() if ln.startswith("RECORD ")]
        rec = json.loads(lines[-1][7:]) if lines else {"notebook": paths[0].name, "error": f"exit {code}",
                                                         "output_tail": text[-3000:]}
        report["notebooks"].append(rec)
        print(f"{rec['notebook']}: {rec.get('seconds', '?')} s {rec.get('error') or rec.get('stopped') or 'ok'}",
              flush=True)
    if not args.no_bench:
        bench = ROOT / "benchmarks"
        for name, cmd in {
            "sampling": [str(bench / "bench_autoregressive.py"), "--only", "sampling", "--sample-rounds", "31"],
            "sweep": [str(bench / "bench_autoregressive.py"), "--only", "sweep", "--sweep-rounds", "7",
                      "--sweep-batches", "64,256,1024,4096,16384"],
            "blocks": [str(bench / "bench_autoregressive.py"), "--only", "blocks", "--sweep-rounds", "7",
                       "--block-batches", "64,1024,16384"],
            "sync": [str(bench / "bench_sync.py"), "--rounds", "15"],
        }.items():
            code, text = _child([sys.executable, *cmd, "--device", args.device], env, args.bench_budget)
            report["benchmarks"][name] = {"exit": code, "output": text[-6000:]}
            print(f"benchmark {name}: exit {code}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    md = [f"# GPU check: {report['device']}, torch {report['torch']}, {args.mode} mode", "",
          "| notebook | seconds | result |", "|---|---|---|"]
    for r in report["notebooks"]:
        md.append(f"| {r['notebook']} | {r.get('seconds', '')} | {r.get('error') or r.get('stopped') or 'ok'} |")
    for r in report["notebooks"]:
        if r.get("glued"):
            md += ["", f"{r['notebook']}, glued: " + ", ".join(
                f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in r["glued"].items())]
        if r.get("traceback") or r.get("output_tail"):
            md += ["", f"{r['notebook']}:", "```", (r.get("traceback") or r["output_tail"]).strip(), "```"]
    for name, b in report["benchmarks"].items():
        md += ["", f"## {name} (exit {b['exit']})", "", "```", b["output"].strip(), "```"]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
