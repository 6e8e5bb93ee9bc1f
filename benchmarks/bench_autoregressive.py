"""Benchmark: coursekit's MAF against zuko, nflows and normflows (training steps/s, log-density and
sampling throughput). Never run by the test suite.

Run it in a separate environment that has the peer libraries next to the same torch::

    python3 -m venv /work/venvs/peers
    /work/venvs/peers/bin/pip install torch==2.13.0            # first, so that torch stays pinned
    /work/venvs/peers/bin/pip install "zuko==1.6.*" nflows==0.14 normflows==1.7.3 torch==2.13.0
    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/bench_autoregressive.py [--dim 8 --threads 1]

Every library gets the same model as far as its API allows: a MAF of ``--layers`` affine
autoregressive layers, each with a MADE of two hidden layers of ``--hidden`` units, on a
standard Gaussian base. (nflows' ``MaskedAutoregressiveFlow`` with ``num_blocks_per_layer=1``
and no residual blocks has two hidden layers too; normflows' ``MaskedAffineAutoregressive``
wraps the same nflows MADE; the libraries differ in order handling between layers.) Figures
are the median over ``--repeats`` timed runs after a warm-up; the GPU is synchronised when used.

``--sampling`` instead compares the cost of sampling as ``p`` grows (``--dims``, default 8,32,64):
coursekit's MAF with the naive solver (``p`` full MADE passes per layer, what every library does),
with the incremental solver (the default: ``p`` small steps, one pass of arithmetic in all),
coursekit's IAF of the same size (one pass per layer), and zuko's MAF when zuko is importable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's coursekit
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import throughput, timed  # noqa: E402


def build_coursekit(p, layers, hidden):
    from coursekit.flows import maf_flow, set_validation

    set_validation(False)  # the NaN check synchronises with the GPU; the others do not check
    flow = maf_flow(p, n_layers=layers, hidden=(hidden, hidden))
    return flow, flow.log_prob, flow.sample


def build_zuko(p, layers, hidden):
    import zuko

    flow = zuko.flows.MAF(features=p, transforms=layers, hidden_features=(hidden, hidden))
    return flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,))


def build_nflows(p, layers, hidden):
    from nflows.flows import MaskedAutoregressiveFlow

    flow = MaskedAutoregressiveFlow(
        features=p, hidden_features=hidden, num_layers=layers, num_blocks_per_layer=1, use_residual_blocks=False
    )
    return flow, flow.log_prob, flow.sample


def build_normflows(p, layers, hidden):
    import normflows as nf

    flows = []
    for _ in range(layers):
        flows += [nf.flows.MaskedAffineAutoregressive(p, hidden, num_blocks=1), nf.flows.Permute(p, mode="swap")]
    model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(p, trainable=False), flows=flows)
    return model, model.log_prob, lambda n: model.sample(n)[0]


BUILDERS = {"coursekit": build_coursekit, "zuko": build_zuko, "nflows": build_nflows, "normflows": build_normflows}


def bench(name, args, device):
    torch.manual_seed(0)
    model, log_prob, sample = BUILDERS[name](args.dim, args.layers, args.hidden)
    model = model.to(device)
    x = torch.randn(args.batch, args.dim, device=device)
    return throughput(model, log_prob, sample, x, args.steps, args.repeats)


def _sampler_coursekit(p, layers, hidden, kind):
    from coursekit.flows import MAF, iaf_flow, maf_flow, set_validation

    set_validation(False)
    if kind == "iaf":
        return iaf_flow(p, n_layers=layers, hidden=(hidden, hidden)).sample
    flow = maf_flow(p, n_layers=layers, hidden=(hidden, hidden))
    for m in flow.modules():
        if isinstance(m, MAF):
            m.naive = kind == "naive"
    return flow.sample


def _sampler_zuko(p, layers, hidden):
    import zuko

    flow = zuko.flows.MAF(features=p, transforms=layers, hidden_features=(hidden, hidden))
    return lambda n: flow().sample((n,))


SAMPLERS = {
    "MAF naive (p passes)": lambda p, l, h: _sampler_coursekit(p, l, h, "naive"),
    "MAF incremental": lambda p, l, h: _sampler_coursekit(p, l, h, "incremental"),
    "IAF (1 pass)": lambda p, l, h: _sampler_coursekit(p, l, h, "iaf"),
    "zuko MAF": _sampler_zuko,
}


def bench_sampling(args, device):
    """Samples per second of each sampler for every p in ``args.dims``; a table and the ratios."""
    dims = [int(d) for d in args.dims.split(",")]
    rates = {name: {} for name in SAMPLERS}
    for p in dims:
        for name, build in SAMPLERS.items():
            torch.manual_seed(0)
            try:
                sample = build(p, args.layers, args.hidden)
            except ImportError:
                continue
            with torch.no_grad():
                rates[name][p] = args.batch / timed(lambda: sample(args.batch), device, args.repeats)
    print(f"{'samples / s':<22}" + "".join(f"{f'p = {p}':>12}" for p in dims))
    for name, row in rates.items():
        if row:
            print(f"{name:<22}" + "".join(f"{row[p]:>12,.0f}" for p in dims))
    naive, inc, iaf, zuko = (rates[k] for k in SAMPLERS)
    for p in dims:
        text = f"p = {p}: IAF / incremental MAF {iaf[p] / inc[p]:.1f}x, incremental / naive MAF {inc[p] / naive[p]:.1f}x"
        if zuko:
            text += f", incremental MAF / zuko MAF {inc[p] / zuko[p]:.1f}x"
        print(text)
    return rates


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--libs", default=",".join(BUILDERS))
    ap.add_argument("--sampling", action="store_true", help="compare the samplers as p grows instead")
    ap.add_argument("--dims", default="8,32,64", help="the values of p for --sampling")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.sampling:
        print(
            f"sampling, {args.layers} layers, MADE hidden=({args.hidden}, {args.hidden}), batch {args.batch}, "
            f"torch {torch.__version__}, {device}, {args.threads} thread(s)"
        )
        return bench_sampling(args, device)
    print(
        f"MAF, p={args.dim}, {args.layers} layers, MADE hidden=({args.hidden}, {args.hidden}), batch {args.batch}, "
        f"torch {torch.__version__}, {device}, {args.threads} thread(s)"
    )
    print(f"{'library':<11}{'train steps/s':>15}{'log-density /s':>17}{'samples /s':>14}")
    for name in args.libs.split(","):
        try:
            steps, dens, samp = bench(name, args, device)
        except ImportError as err:
            print(f"{name:<11}  not installed ({err})")
            continue
        print(f"{name:<11}{steps:>15.1f}{dens:>17,.0f}{samp:>14,.0f}")


if __name__ == "__main__":
    main()
