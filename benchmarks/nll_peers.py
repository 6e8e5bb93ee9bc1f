"""Benchmark: test NLL of coursekit's MAF and Real-NVP against zuko, nflows and normflows, over seeds.

Issue 15 asks for "test NLL <= the best peer's on moons, 8 Gaussians, checkerboard and the digits,
at equal steps, averaged over 3 seeds". This script trains every library's MAF and Real-NVP with
the same loop, data, batches, budget and early stopping, for several seeds, and reports the mean
and standard deviation over the seeds of the test NLL, with a verdict per dataset and model.
Never run by the test suite::

    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/nll_peers.py                 # everything
    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/nll_peers.py --datasets moons \\
        --models realnvp --seeds 0 --steps-2d 300 --steps-digits 300                          # a quick look

The models are the ones of the speed benchmarks, built by their builders (so the differences
between libraries are the ones their docstrings state): MAF, ``bench_autoregressive.BUILDERS``
(``--maf-layers`` 5 layers, MADE hidden (``--hidden``, ``--hidden``) = (64, 64)); Real-NVP,
``bench_coupling.BUILDERS`` (``--realnvp-layers`` 8 couplings, MLP hidden (64, 64); coursekit uses
half/half partitions in 2-D and the 8x8 checkerboard on the digits, clamp 3, zero-initialised).

Training, for every library: coursekit's ``fit_mle``, Adam with lr ``--lr`` (1e-3), no gradient
clipping, batches drawn with the run's seed, validation NLL every 100 steps and after the last
step, the parameters with the best validation NLL restored at the end. The weights are initialised
after ``torch.manual_seed(seed)``; seed s uses the same batches for every library. The test set is
used once, after training, never for a choice.

* 2-D (moons, 8 Gaussians, checkerboard; ``coursekit.data.sample_toy``): 10,000 training points
  (generator seed 0), 2,000 validation points (seed 1), 20,000 fresh test points (seed 2), the same
  for every run; ``--steps-2d`` (2,000) steps of batches of 256. Test NLL in nats per point.
* digits: ``bench_coupling``'s protocol (``_PixelDensity``: coursekit's ``Logit`` in front of each
  library's flow, fresh uniform dequantisation per batch, ``load_digits_split(seed=0)``), batches
  of 128, ``--steps-digits`` (3,000) steps; test NLL of the discrete pixels (fixed test noise) in
  bits per dimension.

A verdict "level or ahead" means coursekit's mean over seeds <= the best peer's mean; the
difference is also given in units of the larger of the two standard deviations over seeds, so that
a gap within the seed spread reads as such.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's coursekit
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_autoregressive  # noqa: E402
import bench_coupling  # noqa: E402
from _common import Table, n_params, print_tables  # noqa: E402

TOY = {"moons": "moons", "8gaussians": "8gaussians", "checkerboard": "checkerboard"}
DATASETS = (*TOY, "digits")
MODELS = ("maf", "realnvp")
LABEL = {"maf": "MAF", "realnvp": "Real-NVP"}
N_TRAIN, N_VAL, N_TEST = 10_000, 2_000, 20_000


class _Density(torch.nn.Module):
    """A library's flow on R^p with the attributes coursekit's ``fit_mle`` reads."""

    def __init__(self, model, log_prob, p):
        super().__init__()
        self.model, self._log_prob = model, log_prob
        self.dim, self.event_shape = p, (p,)

    def log_prob(self, x):
        return self._log_prob(x)


def peer_builder(model: str, lib: str, args) -> Callable[[int, bool], tuple]:
    """``build(p, image) -> (module, log_prob)`` for a library's MAF or Real-NVP of the benchmarks."""
    if model == "maf":
        b = bench_autoregressive.BUILDERS[lib]
        return lambda p, image: b(p, args.maf_layers, args.hidden)[:2]
    b = bench_coupling.BUILDERS[lib]
    return lambda p, image: b(p, args.realnvp_layers, args.hidden, False, image)[:2]


_DATA: dict = {}


def toy_data(name: str, device):
    from coursekit.data import sample_toy

    if name not in _DATA:
        _DATA[name] = tuple(sample_toy(TOY[name], n, seed=s).to(device)
                            for n, s in ((N_TRAIN, 0), (N_VAL, 1), (N_TEST, 2)))
    return _DATA[name]


def train_eval(build: Callable[[int, bool], tuple], dataset: str, seed: int, args, device, desc: str = "") -> dict:
    """Train one model on ``dataset`` with the shared protocol; its test NLL (nats per point in 2-D,
    bits/dim on the digits), the step kept by early stopping, parameters and seconds."""
    from coursekit.flows import bits_per_dim, discrete_nll, uniform_dequantize
    from coursekit.train import TrainingDiverged, fit_mle

    torch.manual_seed(seed)
    if dataset == "digits":
        from coursekit.data import load_digits_split

        digits = _DATA.setdefault("digits", load_digits_split(seed=0, device=device))
        density = bench_coupling._PixelDensity(*build(64, True)).to(device)
        kw = dict(batch_size=128, steps=args.steps_digits, transform=lambda k: uniform_dequantize(k, bench_coupling.K))
        train, val = digits.train, digits.val
    else:
        train, val, test = toy_data(dataset, device)
        density = _Density(*build(2, False), 2).to(device)
        kw = dict(batch_size=256, steps=args.steps_2d)
    start = time.perf_counter()
    try:
        hist = fit_mle(density, train, lr=args.lr, clip=None, seed=seed, val_data=val, val_every=100, desc=desc, **kw)
        kept = hist.best_step
    except TrainingDiverged as err:  # the best state so far is restored; reported, scored as is
        print(f"  {desc} seed {seed}: {err}", flush=True)
        kept = -1
    seconds = time.perf_counter() - start
    density.eval()
    with torch.no_grad():
        if dataset == "digits":
            torch.manual_seed(123)  # the same test noise for every run
            test_nll = bits_per_dim(discrete_nll(density.log_prob, digits.test, bench_coupling.K).mean().item(), 64)
        else:
            test_nll = float(-density.log_prob(test).mean())
    return dict(test=test_nll, kept=kept, params=n_params(density), seconds=seconds)


def mean_sd(values) -> tuple[float, float]:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def fmt(values, digits: int) -> str:
    m, s = mean_sd(values)
    bad = sum(not math.isfinite(x) for x in values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" + (f" ({bad} NaN)" if bad else "")


def unit(dataset: str) -> tuple[str, int]:
    return ("bits/dim", 4) if dataset == "digits" else ("nats", 4)


def verdict(runs: dict[str, list[float]], ref: str = "coursekit") -> str:
    """Whether ``ref``'s mean test NLL is <= the best peer's, with the gap in seed-spread units."""
    peers = {k: v for k, v in runs.items() if k != ref}
    if ref not in runs or not peers:
        return "n/a"
    best = min(peers, key=lambda k: mean_sd(peers[k])[0])
    (m, s), (mb, sb) = mean_sd(runs[ref]), mean_sd(peers[best])
    gap = m - mb
    spread = max(s, sb)
    within = f"{abs(gap) / spread:.1f} sd" if spread > 0 else "-"
    word = "level or ahead" if gap <= 0 else "BEHIND"
    return f"{word}: {gap:+.4f} vs {best} ({within})"


def results(argv=None) -> list[Table]:
    """Run the benchmark and return its tables (a table per model, and the verdicts)."""
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets, models, libs = args.datasets.split(","), args.models.split(","), args.libs.split(",")
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    start = time.perf_counter()
    runs: dict = {}  # (model, dataset, lib) -> list of run dicts
    for model in models:
        for dataset in datasets:
            for lib in libs:
                build = peer_builder(model, lib, args)
                for seed in seeds:
                    r = train_eval(build, dataset, seed, args, device, desc=f"{lib} {model} {dataset}")
                    runs.setdefault((model, dataset, lib), []).append(r)
                    if args.verbose:
                        print(f"  {LABEL[model]:8} {dataset:12} {lib:10} seed {seed}: test {r['test']:.4f} "
                              f"kept {r['kept']} {r['seconds']:.1f}s", flush=True)
    total = time.perf_counter() - start
    tables = []
    for model in models:
        t = Table(f"{LABEL[model]}: test NLL, mean ± sd over seeds {args.seeds}, {device}",
                  ["library", "params (2-D / digits)"] + [f"{d} ({unit(d)[0]})" for d in datasets]
                  + ["kept steps (median)", "train s (mean per run)"])
        for lib in libs:
            rs = [runs[(model, d, lib)] for d in datasets]
            params = " / ".join(dict.fromkeys(f"{r[0]['params']:,}" for r in rs))
            kept = [r2["kept"] for r in rs for r2 in r]
            secs = [r2["seconds"] for r in rs for r2 in r]
            t.rows.append([lib, params] + [fmt([r2["test"] for r2 in r], unit(d)[1]) for r, d in zip(rs, datasets)]
                          + [f"{statistics.median(kept):.0f}", f"{statistics.fmean(secs):.1f}"])
        t.notes = [(f"2-D: {N_TRAIN:,} training / {N_VAL:,} validation / {N_TEST:,} test points, {args.steps_2d} "
                    f"steps of 256; digits: {args.steps_digits} steps of 128; Adam lr {args.lr}, no clipping, "
                    "best validation state kept (nll_peers.py docstring)."),
                   "Per-seed test NLL: " + "; ".join(
                       f"{lib} {d}: " + ", ".join(f"{r['test']:.3f}" for r in runs[(model, d, lib)])
                       for d in datasets for lib in libs)]
        tables.append(t)
    v = Table("Verdict: coursekit's mean test NLL <= the best peer's mean (issue 15)",
              ["model"] + list(datasets))
    for model in models:
        v.rows.append([LABEL[model]] + [verdict({lib: [r["test"] for r in runs[(model, d, lib)]] for lib in libs})
                                        for d in datasets])
    v.notes = [f"Gap = coursekit mean - best peer mean; (x sd): |gap| / the larger of the two seed standard "
               f"deviations. Total {total / 60:.1f} min on {args.threads} thread(s)."]
    tables.append(v)
    return tables


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--libs", default=",".join(bench_coupling.BUILDERS))
    return protocol_arguments(ap)


def protocol_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the training protocol (shared with ``ablation_nll.py``)."""
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps-2d", type=int, default=2000)
    ap.add_argument("--steps-digits", type=int, default=3000)
    ap.add_argument("--maf-layers", type=int, default=5)
    ap.add_argument("--realnvp-layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--verbose", action="store_true", help="print every run as it ends")
    return ap


def main(argv=None, parser=parser, results=results):
    args = parser().parse_args(argv)
    print(f"torch {torch.__version__}, {args.threads} thread(s)", flush=True)
    print_tables(results(argv))


if __name__ == "__main__":
    main()
