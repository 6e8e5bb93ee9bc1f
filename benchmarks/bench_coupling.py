"""Benchmark: coursekit's coupling flows (Real-NVP, NICE) against zuko, nflows and normflows.

Two measurements, both never run by the test suite:

* speed (always): training steps per second (Adam on the NLL of one fixed batch), log-densities
  and samples per second, on Gaussian data of dimension ``--dim``. Timing
  (``_common.interleaved``): every library runs its operation once per round, in an order that
  rotates from round to round, after a warm-up; rates are medians over ``--rounds`` rounds, and each
  peer is compared with coursekit by the median of the per-round speed ratios with its
  interquartile range ("unresolved" when that range contains 1);
* test NLL (``--nll``): every library trains the same size of model on scikit-learn's 8x8
  digits with the same loop, budget and data, and is scored on the same test images.

``benchmarks/run_all.py`` runs this script with the others and writes ``benchmarks/RESULTS.md``.

Run it in the environment that has the peer libraries next to the same torch (see
``bench_autoregressive.py`` for how to make it; ``--nll`` also needs ``pip install scikit-learn==1.9.1``
there, for the digits)::

    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/bench_coupling.py             # speed
    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/bench_coupling.py --nll       # + digits
    /work/venvs/peers/bin/python benchmarks/bench_coupling.py --model nice --device cuda

The models, as close as each API allows: ``--layers`` coupling layers whose conditioner is an
MLP with two hidden layers of ``--hidden`` units, partitions alternating between layers, on a
standard Gaussian base. The differences that remain, stated so the figures can be read:

* coursekit: ``make_realnvp`` / ``make_nice`` with half/half partitions for speed and the
  8x8 checkerboard of chapter 4 for digits; the shift added after the scaling in the density
  direction (``z_b = exp(-alpha) x_b + b``); log-scale soft-clamped, ``clamp * tanh(s / clamp)``
  (clamp 3 here; chapter 4 chose 0.5 on validation, which is not used, to be fair to peers
  run with their defaults); NICE ends with its diagonal rescaling.
* zuko: ``RealNVP``, even/odd coordinates alternating; its affine maps bound the slope from
  below. For NICE, additive couplings (``univariate=AdditiveTransform``): zuko's ``NICE``
  class is affine unless told otherwise. zuko has no rescaling layer, nor has normflows'
  NICE here, so their NICE is volume preserving (chapter 4 shows what that costs).
* nflows: ``SimpleRealNVP`` (``use_volume_preserving=True`` for NICE), even/odd partitions;
  its conditioner is a residual net, and ``num_blocks_per_layer=1`` already gives it four
  linear layers (one more than the others); scale ``sigmoid(s + 2) + 1e-3``.
* normflows: ``AffineCouplingBlock`` (``scale=False`` for NICE) on halves with a swap
  between layers, ``nets.MLP`` zero-initialised; scale ``exp(s)`` unbounded (its default).

The digits protocol (``--nll``): pixels k in {0..16} are dequantised afresh for every batch,
y = (k + u)/17, and sent to logit space by coursekit's ``Logit`` (alpha 0.05), whose
log-determinant is added to every library's log-density, so all report the NLL of the same
discrete data: -log p(y) + 64 log 17 nats per image (:func:`coursekit.flows.discrete_nll`),
also in bits per dimension. Training is coursekit's ``fit_mle`` for every library: Adam (lr
``--lr``), batches of 128, ``--nll-steps`` steps, no gradient clipping, validation NLL every 100
steps with the best state restored at the end; test NLL with fixed noise.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's coursekit
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, library_speed, n_params, print_tables  # noqa: E402

K = 17  # digits' pixel values 0..16


def build_coursekit(p, layers, hidden, nice, image):
    from coursekit.flows import Flow, make_nice, make_realnvp, set_validation

    set_validation(False)  # the NaN check synchronises with the GPU; the others do not check
    kw = dict(kind="checkerboard", shape=(8, 8)) if image else dict(kind="half")
    body = (make_nice if nice else make_realnvp)(p, n_layers=layers, hidden=(hidden, hidden), **kw)
    flow = Flow(body)
    return flow, flow.log_prob, flow.sample


def build_zuko(p, layers, hidden, nice, image):
    import zuko

    # zuko's NICE class is affine by default; additive couplings are asked for explicitly
    kw = dict(univariate=zuko.transforms.AdditiveTransform, shapes=((),)) if nice else {}
    flow = zuko.flows.RealNVP(features=p, transforms=layers, hidden_features=(hidden, hidden), **kw)
    return flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,))


def build_nflows(p, layers, hidden, nice, image):
    from nflows.flows import SimpleRealNVP

    flow = SimpleRealNVP(features=p, hidden_features=hidden, num_layers=layers, num_blocks_per_layer=1,
                         use_volume_preserving=nice)
    return flow, flow.log_prob, flow.sample


def build_normflows(p, layers, hidden, nice, image):
    import normflows as nf

    flows = []
    for _ in range(layers):
        half = p // 2
        net = nf.nets.MLP([half, hidden, hidden, (p - half) * (1 if nice else 2)], init_zeros=True)
        flows += [nf.flows.AffineCouplingBlock(net, scale=not nice), nf.flows.Permute(p, mode="swap")]
    model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(p, trainable=False), flows=flows)
    return model, model.log_prob, lambda n: model.sample(n)[0]


BUILDERS = {"coursekit": build_coursekit, "zuko": build_zuko, "nflows": build_nflows, "normflows": build_normflows}


class _PixelDensity(torch.nn.Module):
    """A library's flow on logit space, seen as a density of dequantised pixels in [0, 1)^64 with
    coursekit's ``Logit`` in front: the shape coursekit's ``fit_mle`` trains, for every library."""

    event_shape, dim = (64,), 64

    def __init__(self, model, log_prob):
        from coursekit.flows import Logit

        super().__init__()
        self.model, self.logit, self._log_prob = model, Logit(64), log_prob

    def log_prob(self, y):
        z, ld = self.logit.inverse(y)
        return self._log_prob(z) + ld


def digits_nll(name, args, device):
    """Train on the digits with the shared protocol; return (test NLL nats, bits/dim, params, s, kept step)."""
    from coursekit.data import load_digits_split
    from coursekit.flows import bits_per_dim, discrete_nll, uniform_dequantize
    from coursekit.train import TrainingDiverged, fit_mle

    digits = load_digits_split(seed=0, device=device)
    torch.manual_seed(args.seed)
    density = _PixelDensity(*BUILDERS[name](64, args.layers, args.hidden, args.model == "nice", True)[:2]).to(device)
    start = time.perf_counter()
    try:
        hist = fit_mle(density, digits.train, steps=args.nll_steps, batch_size=128, lr=args.lr, clip=None,
                       seed=args.seed, transform=lambda k: uniform_dequantize(k, K), val_data=digits.val,
                       val_every=100, desc=name)
    except TrainingDiverged as err:
        print(f"  {name}: {err}")
        return math.nan, math.nan, n_params(density), time.perf_counter() - start, 0
    seconds = time.perf_counter() - start
    torch.manual_seed(123)  # the same test noise for every library
    with torch.no_grad():
        test = discrete_nll(density.log_prob, digits.test, K).mean().item()
    return test, bits_per_dim(test, 64), n_params(density), seconds, hist.best_step


def speed(args, device) -> Table:
    x = torch.randn(args.batch, args.dim, generator=torch.Generator().manual_seed(1)).to(device)
    nice = args.model == "nice"
    builders = {name: (lambda b=BUILDERS[name]: b(args.dim, args.layers, args.hidden, nice, False))
                for name in args.libs.split(",")}
    label = "NICE" if nice else "Real-NVP"
    title = (f"{label}, p = {args.dim}, {args.layers} coupling layers, MLP hidden ({args.hidden}, {args.hidden}), "
             f"batch {args.batch}, {device}")
    return library_speed(title, builders, x, args.steps, args.rounds, args.min_seconds)


def nll_table(args, device, libs) -> Table:
    label = "NICE" if args.model == "nice" else "Real-NVP"
    table = Table(f"{label} on the 8x8 digits: {args.nll_steps} steps of Adam (lr {args.lr}), batch 128, "
                  f"seed {args.seed}, {device}",
                  ["library", "params", "test NLL (nats)", "bits/dim", "kept step", "train s"])
    for name in libs:
        nats, bpd, params, seconds, kept = digits_nll(name, args, device)
        table.rows.append([name, f"{params:,}", f"{nats:.2f}", f"{bpd:.3f}", f"{kept}", f"{seconds:.0f}"])
    table.notes = [("One seed; every library trained by coursekit's fit_mle with the same data, batches and "
                    "budget (benchmarks/bench_coupling.py docstring). Training seconds are not interleaved.")]
    return table


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["realnvp", "nice"], default="realnvp")
    ap.add_argument("--dim", type=int, default=64, help="dimension for the speed figures")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed call")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the speed table")
    ap.add_argument("--min-seconds", type=float, default=0.05, help="repeat a call within a timing up to this")
    ap.add_argument("--nll", action="store_true", help="also train on the digits and report test NLL")
    ap.add_argument("--nll-steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--libs", default=",".join(BUILDERS))
    return ap


def results(argv=None) -> list[Table]:
    """Run the benchmark and return its tables (what ``run_all.py`` collects)."""
    ap = parser()
    args = ap.parse_args(argv)
    if args.dim < 2:
        ap.error(f"--dim must be at least 2 for a coupling layer, got {args.dim}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tables = [speed(args, device)]
    if args.nll:
        libs = [row[0] for row in tables[0].rows]
        tables.append(nll_table(args, device, libs))
    return tables


def main(argv=None):
    args = parser().parse_args(argv)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print_tables(results(argv))


if __name__ == "__main__":
    main()
