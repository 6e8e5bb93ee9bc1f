"""Score matching against Algorithm 1, and the cost of each score matching objective against p.

Prints two tables (chapter 7 quotes them):

1. the seconds per loss + backward pass of exact (Hyvarinen), sliced (one projection) and denoising
   score matching for an MLP energy on R^p, p = 2 ... 256 (best of ``--repeats``);
2. on 2-D toy sets, the training time that each method needs to reach a stated sample quality,
   for the same MLP energy, optimiser and batch size: Algorithm 1 (chapter 6's settings: 15 ULA
   steps of 0.005, replay buffer) against exact, sliced and denoising score matching. Quality is
   measured without sampling: 1 - TV between p_theta, normalised on a 60 x 60 grid of [-4, 4]^2, and
   the histogram of the data on the same grid (and, for the eight Gaussians, the mass of p_theta
   within 0.75 of the centres, with the time to reach 0.7 and 0.9 of it). The clock stops during
   evaluations. ("never": not within the run.)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_score.py [--iters 1000] [--sets 8gaussians rings]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coursekit.data import sample_toy  # noqa: E402
from coursekit.ebm import MLPEnergy, train_ebm  # noqa: E402
from coursekit.score import (  # noqa: E402
    denoising_score_matching, exact_score_matching, sliced_score_matching, train_score,
)

LIM, BINS = 4.0, 60


def cost_table(dims, batch, hidden, repeats, device):
    objectives = {
        "exact": lambda U, x: exact_score_matching(U, x),
        "sliced": lambda U, x: sliced_score_matching(U, x),
        "denoising": lambda U, x: denoising_score_matching(U, x, 0.1),
    }
    print(f"\nseconds per loss + backward (MLP energy, hidden {hidden}, batch {batch}, best of {repeats}, {device})")
    print(f"{'p':>5} " + " ".join(f"{k:>11}" for k in objectives) + f" {'exact/sliced':>13}")
    for p in dims:
        torch.manual_seed(p)
        U = MLPEnergy(p, hidden=hidden, depth=2).to(device)
        x = torch.randn(batch, p, device=device)
        row = []
        for fn in objectives.values():
            best = math.inf
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn(U, x).backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            row.append(best)
        print(f"{p:>5} " + " ".join(f"{t:11.5f}" for t in row) + f" {row[0] / row[1]:13.1f}")


class Quality:
    """1 - TV(p_theta on the grid, data histogram), and the mass near the eight centres."""

    def __init__(self, data, device):
        edges = torch.linspace(-LIM, LIM, BINS + 1)
        centres = (edges[1:] + edges[:-1]) / 2
        gx, gy = torch.meshgrid(centres, centres, indexing="xy")
        self.grid = torch.stack([gx.flatten(), gy.flatten()], 1).to(device)
        d = data.cpu()
        ix = torch.bucketize(d[:, 0].clamp(-LIM, LIM - 1e-6), edges) - 1
        iy = torch.bucketize(d[:, 1].clamp(-LIM, LIM - 1e-6), edges) - 1
        hist = torch.zeros(BINS * BINS)
        hist.index_add_(0, iy * BINS + ix, torch.ones(len(d)))
        self.hist = (hist / hist.sum()).to(device)
        ang = 2 * math.pi * torch.arange(8) / 8
        c8 = 2.5 * torch.stack([ang.cos(), ang.sin()], 1).to(device)
        self.near = torch.cdist(self.grid, c8).min(1).values < 0.75

    def __call__(self, U):
        with torch.no_grad():
            p = torch.softmax(-U(self.grid), 0)
        return 1 - 0.5 * float((p - self.hist).abs().sum()), float(p[self.near].sum())


def race(name, n_iter, every, device, targets):
    data = sample_toy(name, 8_000, seed=0).to(device)
    quality = Quality(data, device)
    print(f"\n{name}: quality = 1 - TV(p_theta, data histogram) on a {BINS}x{BINS} grid"
          + ("; mass near the modes in brackets" if name == "8gaussians" else "") + f"; {n_iter} iterations")
    methods = {
        "Algorithm 1": None,
        "exact SM": dict(objective="exact"),
        "sliced SM": dict(objective="sliced"),
        "denoising SM (0.1)": dict(objective="dsm", sigma=0.1),
    }
    mass_targets = [0.7, 0.9] if name == "8gaussians" else []
    print(f"{'method':>20} {'ms/iter':>8} {'final':>14} " + " ".join(f"{'t(q>=' + str(q) + ')':>10}" for q in targets)
          + "".join(f" {'t(mass>=' + str(m) + ')':>13}" for m in mass_targets))
    for label, kw in methods.items():
        torch.manual_seed(0)
        U = MLPEnergy(2, hidden=64, depth=2).to(device)
        rec, state = [], {"k": 0, "elapsed": 0.0, "t": time.perf_counter()}

        def cb(*args, U=U, rec=rec, state=state):
            state["k"] += 1
            if state["k"] % every == 0:
                state["elapsed"] += time.perf_counter() - state["t"]
                rec.append((state["elapsed"], *quality(U)))
                state["t"] = time.perf_counter()

        gen = torch.Generator(device).manual_seed(0)
        if kw is None:
            train_ebm(U, data, n_iter=n_iter, batch_size=256, n_steps=15, gamma=0.005, alpha=0.05, chains="replay",
                      buffer_size=8_192, reg=0.01, lr=3e-3, generator=gen, after_step=cb)
        else:
            train_score(U, data, n_iter=n_iter, batch_size=256, lr=3e-3, generator=gen, callback=cb, **kw)
        times = [next((t for t, q, _ in rec if q >= target), math.inf) for target in targets]
        mass_times = [next((t for t, _, m in rec if m >= target), math.inf) for target in mass_targets]
        final = f"{rec[-1][1]:.3f}" + (f" ({rec[-1][2]:.2f})" if name == "8gaussians" else "")
        print(f"{label:>20} {1e3 * state['elapsed'] / n_iter:8.1f} {final:>14} "
              + " ".join(f"{t:10.1f}" if math.isfinite(t) else f"{'never':>10}" for t in times)
              + "".join(f" {t:13.1f}" if math.isfinite(t) else f" {'never':>13}" for t in mass_times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=1_000, help="training iterations per method (default 1000)")
    parser.add_argument("--every", type=int, default=25, help="evaluate every that many iterations")
    parser.add_argument("--sets", nargs="+", default=["8gaussians", "rings"], help="toy sets for the race")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.6, 0.7], help="quality thresholds")
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}")
    cost_table(args.dims, args.batch, args.hidden, args.repeats, device)
    for name in args.sets:
        race(name, args.iters, args.every, device, args.targets)


if __name__ == "__main__":
    main()
