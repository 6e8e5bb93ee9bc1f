"""Study: NICE against Real-NVP on scikit-learn's 8x8 digits, over seeds and settings.

Chapter 4 trains NICE and Real-NVP with settings chosen on the validation NLL, over three seeds
(seeds 0, 1, 2 of the weights and batches; its table and prose show them); this script runs the
same comparison from the command line, for any seeds, budget and size, and with ``--sweep`` over
the grid the settings were chosen from. It prints validation and test NLL in bits per dimension
(the dequantisation bound of ``coursekit.flows.discrete_nll``), the step kept by early
stopping, the number of parameters and the training time. Never run by the test suite::

    python benchmarks/digits_coupling.py                 # chapter 4's settings, seeds 0, 1, 2
    python benchmarks/digits_coupling.py --sweep         # the validation grid (slow on CPU)
    python benchmarks/digits_coupling.py --device cuda   # on a GPU

Training is the chapter's: AdamW, batches of 128, fresh dequantisation noise per batch,
validation every 100 steps with early stopping, the test set scored once with fixed noise.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's coursekit

from coursekit.data import load_digits_split  # noqa: E402
from coursekit.flows import Compose, Flow, Logit, bits_per_dim, discrete_nll, make_nice, make_realnvp  # noqa: E402
from coursekit.flows import uniform_dequantize  # noqa: E402
from coursekit.train import fit_mle  # noqa: E402

K = 17  # pixel values 0..16
CHAPTER = {"NICE": dict(weight_decay=0.5), "Real-NVP": dict(weight_decay=1.0, clamp=1.0)}


def run(name, digits, seed, layers, hidden, steps, weight_decay, clamp=None, device="cpu"):
    kw = dict(kind="checkerboard", shape=(8, 8), hidden=(hidden, hidden))
    torch.manual_seed(seed)
    if name == "NICE":
        body = make_nice(64, n_layers=layers, **kw)
    else:
        body = make_realnvp(64, n_layers=layers, clamp=clamp, **kw)
    flow = Flow(Compose(*body, Logit(64))).to(device)
    opt = torch.optim.AdamW(flow.parameters(), lr=1e-3, weight_decay=weight_decay)
    start = time.perf_counter()
    hist = fit_mle(flow, digits.train, steps=steps, batch_size=128, optimizer=opt, seed=seed,
                   transform=lambda k: uniform_dequantize(k, K), val_data=digits.val, val_every=100)
    seconds = time.perf_counter() - start
    torch.manual_seed(123)
    with torch.no_grad():
        test = discrete_nll(flow.log_prob, digits.test, K).mean().item()
    val = min(v for _, v in hist.val) + 64 * math.log(K)
    return dict(val=bits_per_dim(val, 64), test=bits_per_dim(test, 64), best_step=hist.best_step,
                params=sum(p.numel() for p in flow.parameters()), seconds=seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--sweep", action="store_true", help="the validation grid instead of the chapter's settings")
    ap.add_argument("--models", default="NICE,Real-NVP", help="comma-separated: NICE, Real-NVP or both")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    digits = load_digits_split(seed=0, device=args.device)
    if args.sweep:
        configs = [("NICE", dict(weight_decay=wd)) for wd in (0.1, 0.5, 1.0, 2.0)]
        grid = itertools.product((0.5, 1.0, 2.0), (0.5, 1.0, 3.0))
        configs += [("Real-NVP", dict(weight_decay=wd, clamp=c)) for wd, c in grid]
    else:
        configs = list(CHAPTER.items())
    models = args.models.split(",")
    if not set(models) <= set(CHAPTER):
        raise SystemExit(f"--models: unknown {sorted(set(models) - set(CHAPTER))}; choose from {', '.join(CHAPTER)}")
    configs = [(name, settings) for name, settings in configs if name in models]
    print(f"digits: {len(digits.train)} train / {len(digits.val)} val / {len(digits.test)} test; "
          f"{args.layers} layers of ({args.hidden}, {args.hidden}); {args.steps} steps; device {args.device}")
    print(f"{'model':>9} {'settings':>32} | {'seed':>4} | {'val bpd':>7} | {'test bpd':>8} | {'kept step':>9} | "
          f"{'params':>7} | {'time (s)':>8}")
    summary = {}
    for name, settings in configs:
        label = ", ".join(f"{k}={v:g}" for k, v in settings.items())
        tests = []
        for seed in args.seeds:
            r = run(name, digits, seed, args.layers, args.hidden, args.steps, device=args.device, **settings)
            tests.append(r["test"])
            print(f"{name:>9} {label:>32} | {seed:>4} | {r['val']:7.3f} | {r['test']:8.3f} | {r['best_step']:>9} | "
                  f"{r['params']:>7,} | {r['seconds']:8.1f}", flush=True)
        summary[(name, label)] = tests
    if len(args.seeds) > 1:
        print("\ntest bits/dim over seeds (mean ± standard deviation):")
        for (name, label), tests in summary.items():
            print(f"{name:>9} {label:>32}: {statistics.mean(tests):.3f} ± {statistics.stdev(tests):.3f}")


if __name__ == "__main__":
    main()
