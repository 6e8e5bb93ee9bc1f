"""Ablation: which of coursekit's MAF / Real-NVP defaults costs test NLL against the peers (issue 15).

Trains variants of coursekit's MAF and Real-NVP with exactly the protocol of ``nll_peers.py``
(``nll_peers.train_eval``: same data, batches, steps, lr, early stopping on the validation set,
test set scored once) over several seeds, and prints the mean ± sd of the test NLL per variant
and dataset, with the difference to the default variant. Nothing in coursekit is edited: the
variants are built from coursekit's public pieces with other arguments, or re-initialised.
Never run by the test suite::

    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/ablation_nll.py --model maf
    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/ablation_nll.py --model realnvp --datasets moons

MAF variants (5 layers, MADE hidden (64, 64), as ``maf_flow``): ``default`` (``maf_flow`` as it
was when this ablation was run, before issue 15 changed it on the strength of this script:
alternating natural / reversed MADE orders, ``alpha = 5 tanh(a / 5)``, torch's default init of
every layer, fixed standard normal base; ``random_order+zero_last+shift_after`` is today's ``maf_flow``
for p > 2, ``zero_last+shift_after`` for p = 2); ``bound6.9``, ``bound10``, ``bound1e3`` (the clamp bound B: log 1000, 10, or 1e3, which is no
clamp in practice);
``softclip`` (zuko's soft clip ``alpha = a / (1 + |a| / log 1000)`` in place of the tanh);
``zero_last`` (the last MADE layer's weights and biases set to zero, so every layer starts as the
identity); ``small_last`` (the last MADE layer at a tenth of torch's default initialisation: each layer
starts near the identity, not at it); ``reverse`` (every MADE in the natural order with a ``Reverse`` layer between
layers: the same map family, another parametrisation order); ``random_order`` (a random order per
layer, drawn from the seeded global RNG); ``random_degrees`` (hidden-unit degrees drawn at random,
as nflows' ``random_mask=True``, instead of cycling 1..p-1); ``learned_base`` (a diagonal Gaussian
base with trained mean and log-std); ``shift_after`` (the peers' parametrisation of the density
direction, ``z = exp(-alpha) x + b`` with ``b`` the network's output, in place of the slides'
``z = (x - m) exp(-alpha)``: ``MAF(shift="after")``, today's default); and combinations joined by
``+``.

Real-NVP variants (8 couplings, MLP hidden (64, 64), as ``make_realnvp``; half/half partitions
in 2-D, the 8x8 checkerboard on the digits): ``default`` (today's ``make_realnvp``: clamp 3,
zero-initialised last layer, the shift added after the scaling in the density direction,
``z_b = exp(-alpha) x_b + b``); ``clamp1``, ``clamp6.9``, ``noclamp``; ``init`` (torch's default
init of the last layer, not zero); ``softclip`` (zuko's soft clip in place of the tanh clamp);
``shift_before`` (the slides' form ``z_b = (x_b - m) exp(-alpha)`` with ``m`` the network's
output, ``make_realnvp``'s default before issue 15 changed it on the strength of this script);
``silu``, ``elu``, ``tanh``, ``gelu``, ``leaky`` (that activation in every conditioner in place
of the ReLU, swapped in after the weights are drawn, so a seed's initial weights are the
default's); ``actnorm`` (Glow's ActNorm, with its data-dependent initialisation, after every
coupling in the sampling direction: 4 more parameters per coupling in 2-D); ``actnorm_data`` (one
ActNorm, at the data end); ``learned_base`` (a diagonal Gaussian base with trained mean and
log-std); combinations joined by ``+``.
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

from _common import Table  # noqa: E402
import nll_peers  # noqa: E402
from nll_peers import DATASETS, LABEL, mean_sd, protocol_arguments, train_eval, unit  # noqa: E402

MAF_VARIANTS = ("default", "bound6.9", "bound10", "bound1e3", "softclip", "zero_last", "reverse", "random_order",
                "random_degrees", "learned_base", "shift_after", "small_last")
REALNVP_VARIANTS = ("default", "clamp1", "clamp6.9", "noclamp", "init", "softclip", "shift_before", "silu", "elu",
                    "tanh", "gelu", "leaky", "actnorm_data", "actnorm", "learned_base")
ACTIVATIONS = {"silu": torch.nn.SiLU, "elu": torch.nn.ELU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU,
               "leaky": torch.nn.LeakyReLU}


class _LearnedBase(torch.nn.Module):
    """A coursekit map on a diagonal Gaussian base whose mean and log-std are trained."""

    def __init__(self, transform, p):
        super().__init__()
        self.transform, self.dim, self.event_shape = transform, p, (p,)
        self.mu = torch.nn.Parameter(torch.zeros(p))
        self.log_sigma = torch.nn.Parameter(torch.zeros(p))

    def log_prob(self, x):
        z, ld = self.transform.inverse(x)
        e = (z - self.mu) * torch.exp(-self.log_sigma)
        return (-0.5 * e.pow(2) - self.log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1) + ld


def _random_degree_masks(made, gen):
    """Replace a MADE's masks by ones from random hidden degrees (nflows' ``random_mask=True``):
    each hidden unit's degree uniform in [min degree of the layer below, p - 1]."""
    from coursekit.made import MaskedLinear

    p = made.dim
    d_in = torch.empty(p, dtype=torch.long)
    d_in[made.order] = torch.arange(1, p + 1)
    layers = [m for m in made.net if isinstance(m, MaskedLinear)]
    prev = d_in
    for layer in layers[:-1]:
        lo = min(int(prev.min()), p - 1)
        d = torch.randint(lo, p, (layer.out_features,), generator=gen)
        layer.mask.copy_((d[:, None] >= prev[None, :]).to(layer.mask.dtype))
        prev = d
    d_out = d_in.repeat(made.n_params)
    layers[-1].mask.copy_((d_out[:, None] > prev[None, :]).to(layers[-1].mask.dtype))


def _options(variant: str, known: tuple[str, ...], model: str) -> set[str]:
    """The parts of a variant name such as ``random_order+zero_last`` (``default``: none)."""
    opts = set(variant.split("+")) - {"default"}
    unknown = opts - set(known)
    if unknown:
        raise SystemExit(f"unknown {model} variant part(s) {sorted(unknown)}; choose from {', '.join(known)}")
    return opts


def maf_builder(variant: str, layers: int, hidden: int):
    opts = _options(variant, MAF_VARIANTS, "MAF")

    def build(p, image):
        from coursekit.flows import MAF, Compose, Reverse, set_validation
        from coursekit.flows.autoregressive import AutoregressiveFlow

        set_validation(False)
        bound = (10.0 if "bound10" in opts else 1e3 if "bound1e3" in opts else math.log(1e3) if "bound6.9" in opts
                 else 5.0)
        gen = torch.Generator().manual_seed(int(torch.randint(2**31, ())))  # follows the run's seed
        mods = []
        for k in range(layers):
            if "random_order" in opts:
                order = torch.randperm(p, generator=gen)
            elif "reverse" in opts:
                order = "natural"
            else:
                order = "natural" if k % 2 == 0 else "reversed"
            layer = MAF(p, (hidden, hidden), order, bound, shift="after" if "shift_after" in opts else "before")
            made = layer.conditioner.made
            if "random_degrees" in opts:
                _random_degree_masks(made, gen)
            if "zero_last" in opts:
                torch.nn.init.zeros_(made.net[-1].weight)
                torch.nn.init.zeros_(made.net[-1].bias)
            else:  # MAF now starts at zero there: give back torch's default initialisation
                made.net[-1].reset_parameters()
                if "small_last" in opts:
                    with torch.no_grad():
                        made.net[-1].weight.mul_(0.1)
                        made.net[-1].bias.mul_(0.1)
            if "softclip" in opts:
                # the log-density only: the sampler's in-place steps keep the tanh (not used here)
                c = math.log(1e3)
                layer.conditioner._alpha = lambda a, c=c: a / (1 + a.abs() / c)
            mods.append(layer)
            if "reverse" in opts and k < layers - 1:
                mods.append(Reverse(p))
        body = Compose(*mods)
        if "learned_base" in opts:
            model = _LearnedBase(body, p)
        else:
            model = AutoregressiveFlow(body, base="normal")
        return model, model.log_prob

    return build


def realnvp_builder(variant: str, layers: int, hidden: int):
    opts = _options(variant, REALNVP_VARIANTS, "Real-NVP")

    def build(p, image):
        from coursekit.flows import Flow, make_realnvp, set_validation

        set_validation(False)
        clamp = 1.0 if "clamp1" in opts else math.log(1e3) if "clamp6.9" in opts else None if "noclamp" in opts else 3.0
        kw = dict(kind="checkerboard", shape=(8, 8)) if image else dict(kind="half")
        flow = Flow(make_realnvp(p, n_layers=layers, hidden=(hidden, hidden), zero_init="init" not in opts,
                                 clamp=clamp, shift="before" if "shift_before" in opts else "after", **kw))
        if "softclip" in opts:
            from coursekit.flows import AffineCoupling

            for layer in flow.modules():
                if isinstance(layer, AffineCoupling):
                    layer._alpha = lambda s: s / (1 + s.abs() / math.log(1e3))  # zuko's soft clip
        acts = [ACTIVATIONS[a] for a in opts if a in ACTIVATIONS]
        if len(acts) > 1:
            raise SystemExit(f"Real-NVP variant {variant!r} names more than one activation")
        if acts:  # the same weights, drawn before the swap: only the nonlinearity differs
            for net in [m for m in flow.modules() if isinstance(m, torch.nn.Sequential)]:
                for i, m in enumerate(net):
                    if isinstance(m, torch.nn.ReLU):
                        net[i] = acts[0]()
        if "actnorm" in opts or "actnorm_data" in opts:
            from coursekit.flows import ActNorm, Compose

            # in the sampling direction an ActNorm after every coupling ("actnorm") or after the
            # last one only ("actnorm_data"): either way one sits at the data end, where the
            # density direction starts and its data-dependent initialisation standardises the data
            couplings = list(flow.transform) if "actnorm" in opts else [flow.transform]
            flow = Flow(Compose(*[m for c in couplings for m in (c, ActNorm(p))]))
        if "learned_base" in opts:
            model = _LearnedBase(flow.transform, p)
            return model, model.log_prob
        return flow, flow.log_prob

    return build


def results(argv=None) -> list[Table]:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = args.datasets.split(",")
    variants = args.variants.split(",") if args.variants else list(
        MAF_VARIANTS if args.model == "maf" else REALNVP_VARIANTS)
    if args.model == "maf":
        builders = {v: maf_builder(v, args.maf_layers, args.hidden) for v in variants}
    else:
        builders = {v: realnvp_builder(v, args.realnvp_layers, args.hidden) for v in variants}
    start = time.perf_counter()
    res: dict = {}
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"unknown dataset {d!r}")
        for v, build in builders.items():
            for seed in seeds:
                r = train_eval(build, d, seed, args, device, desc=f"{v} {d}")
                res.setdefault((d, v), []).append(r)
                if args.verbose:
                    print(f"  {d:12} {v:28} seed {seed}: test {r['test']:.4f} kept {r['kept']} "
                          f"{r['seconds']:.1f}s", flush=True)
    total = time.perf_counter() - start
    ref = variants[0]
    t = Table(f"Ablation, coursekit {LABEL[args.model]}: test NLL mean ± sd over seeds {args.seeds}",
              ["variant"] + [f"{d} ({unit(d)[0]})" for d in datasets]
              + [f"{d}: - {ref}" for d in datasets])
    for v in variants:
        cells, diffs = [], []
        for d in datasets:
            vals = [r["test"] for r in res[(d, v)]]
            m, s = mean_sd(vals)
            cells.append(f"{m:.4f} ± {s:.4f}")
            # paired by seed: the same batches and the same seed for the weights
            pd = [a["test"] - b["test"] for a, b in zip(res[(d, v)], res[(d, ref)])]
            pm, ps = mean_sd(pd)
            diffs.append("reference" if v == ref else f"{pm:+.4f} ± {ps:.4f}")
        t.rows.append([v] + cells + diffs)
    t.notes = [(f"Protocol of nll_peers.py: {args.steps_2d} steps (2-D), {args.steps_digits} steps (digits), "
                f"lr {args.lr}, best validation state kept. Differences to '{ref}' are paired by seed "
                f"(mean ± sd of the per-seed differences). {total / 60:.1f} min."),
               "Per-seed: " + "; ".join(f"{v} {d}: " + ", ".join(f"{r['test']:.3f}" for r in res[(d, v)])
                                        for d in datasets for v in variants)]
    return [t]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["maf", "realnvp"], default="maf")
    ap.add_argument("--variants", default="", help="comma-separated; parts joined by '+'; first is the reference")
    return protocol_arguments(ap)


def main(argv=None):
    nll_peers.main(argv, parser=parser, results=results)


if __name__ == "__main__":
    main()
