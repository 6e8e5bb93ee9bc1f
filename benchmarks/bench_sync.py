"""Benchmark: what reading values back from the device costs a training loop (issue 15, part 3).

Until this round, ``fit_mle`` read two values back at every step: ``check_input`` scanned each
batch for NaN/inf (``bool(torch.isfinite(x).all())``) and the guard converted the loss to a
Python float. On a GPU each read is a host synchronisation: the CPU waits until the device has
finished everything queued, so it cannot queue the next step meanwhile. Now ``fit_mle`` checks
its data once, runs the loop inside ``coursekit.flows.values_checked()`` (shapes still checked,
values not rescanned) and hands the loss tensor to ``TrainingGuard``, which reads the window's
losses and the parameter norm back in one transfer every 25 steps.

This script times the two patterns in the same loop (same flow, data, batches, Adam), interleaved
round by round (``_common.interleaved``): one round is one guard window, 25 steps,

* ``per-step reads``: the old pattern, a NaN scan of the batch and ``float(loss)`` every step;
* ``deferred``: the new one, no scan, the 25 losses read back together at the end.

Run it where the peers' benchmarks run (it needs only coursekit and torch)::

    OMP_NUM_THREADS=1 python benchmarks/bench_sync.py [--device cuda] [--rounds 51]

On a CPU a read waits for nothing, so the difference is the scan's arithmetic and a little
Python: expect a ratio near 1 ('unresolved' is a correct answer there). The figure that matters is
the ratio on a GPU, where each read stalls the queue (not measured until a GPU is available).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's coursekit
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, interleaved, print_tables, rate, ratio_cell, speed_ratio  # noqa: E402

WINDOW = 25  # steps between two reads of the guard (TrainingGuard's check_every)


def _models(device):
    from coursekit.flows import Flow, maf_flow, make_realnvp

    torch.manual_seed(0)
    return {
        "Real-NVP, p = 64, 8 layers, hidden (64, 64), batch 512": (
            Flow(make_realnvp(64, n_layers=8, hidden=(64, 64))), 64, 512),
        "MAF, p = 64, 5 layers, hidden (64, 64), batch 512": (maf_flow(64, 5, hidden=(64, 64)), 64, 512),
        "Real-NVP, p = 2, 4 layers, hidden (32, 32), batch 128": (
            Flow(make_realnvp(2, n_layers=4, hidden=(32, 32))), 2, 128),
    }


def _loops(flow, data, batch):
    from coursekit.flows import values_checked

    gen = torch.Generator(device=data.device).manual_seed(0)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)

    def step():
        idx = torch.randint(0, data.shape[0], (batch,), generator=gen, device=data.device)
        loss = -flow.log_prob(data[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def per_step_reads():
        for _ in range(WINDOW):
            value = float(step())  # the batch was scanned inside log_prob (validation on)
            if not math.isfinite(value):
                raise RuntimeError("diverged")

    def deferred():
        with values_checked():
            losses = [step() for _ in range(WINDOW)]
        if not all(math.isfinite(v) for v in torch.stack(losses).tolist()):  # the one read
            raise RuntimeError("diverged")

    return {"per-step reads": per_step_reads, "deferred": deferred}


def results(argv=None) -> list[Table]:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    table = Table(
        f"Training steps per second with per-step reads and with deferred reads, {device}",
        ["model", "per-step reads, steps/s", "deferred, steps/s", "deferred / per-step reads"],
    )
    for name, (flow, p, batch) in _models(device).items():
        flow.to(device).train()
        data = torch.randn(8192, p, generator=torch.Generator().manual_seed(1)).to(device)
        times = interleaved(_loops(flow, data, batch), args.rounds, device)
        table.rows.append([name, f"{rate(times['per-step reads'], WINDOW):,.1f}", f"{rate(times['deferred'], WINDOW):,.1f}",
                           ratio_cell(speed_ratio(times, "deferred", "per-step reads"))])
    table.notes = [
        f"One round: {WINDOW} Adam steps (one guard window) of each loop, interleaved; rates are medians over "
        f"{args.rounds} rounds; the ratio is the median of the per-round speed ratios [interquartile range].",
        "On a CPU a read waits for nothing: the difference is the NaN scan and the Python conversion.",
    ]
    return [table]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--min-seconds", type=float, default=0.0, help="accepted for run_all; unused")
    return ap


def main(argv=None):
    print(f"torch {torch.__version__}")
    print_tables(results(argv))


if __name__ == "__main__":
    main()
