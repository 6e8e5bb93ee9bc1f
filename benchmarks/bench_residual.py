"""Benchmark: coursekit's residual flow against normflows' (both after Residual Flows, Chen et al. 2019).

Two measurements, never run by the test suite:

* speed, on Gaussian data of dimension ``--dim``: training steps per second, log-densities per second and
  the time of the inverse (the sampling direction, a fixed-point iteration in every block), the two
  libraries timed **interleaved**, round by round in one process, and summarised by the median of the
  per-round ratios coursekit / normflows with their interquartile range over the rounds;
* test NLL at an equal training budget, on two moons (nats) and on scikit-learn's 8x8 digits (bits per
  dimension): the same training loop, optimiser, learning rate, batches and number of steps for both,
  and the same scoring with **exact** log-determinants (the autograd Jacobian of the whole density-direction
  map, the same code for both libraries).

Run it in an environment that has normflows next to the same torch (not the course's .venv)::

    python3 -m venv /work/venvs/peers
    /work/venvs/peers/bin/pip install torch==2.13.0 normflows==1.7.3 scikit-learn==1.9.1
    /work/venvs/peers/bin/pip install --no-deps -e .
    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/bench_residual.py
    OMP_NUM_THREADS=1 /work/venvs/peers/bin/python benchmarks/bench_residual.py --no-nll --rounds 9

The models, as close as the two APIs allow: ``--blocks`` residual blocks ``z = x + g(x)`` explicit in the
density direction (as in the paper), each followed in the sampling direction by an ActNorm layer, ``g`` with
three spectrally normalised linear layers (widths ``p, --hidden, --hidden, p``), each of norm at most
``--coeff``, so ``Lip(g) <= coeff^3``; Lipschitz-Swish activations. The differences that remain, stated so
that the figures can be read:

* coursekit: ``make_residual_flow(p, explicit="inverse", logdet="roulette")``. ``g`` is
  ``Linear, LipSwish, Linear, LipSwish, Linear``; one power iteration per layer and per training call, warm
  started, converged in eval mode. Log-determinant: 2 exact terms, then a geometric number ``G`` more with
  ``P(G >= j) = (1 - q)^j``, ``q = (1 - Lip^2) / 2`` (3.3 extra terms on average at ``coeff = 0.9``),
  Rademacher probe, in training and evaluation alike; Neumann-series gradient. Inverse: fixed point until
  Banach's bound is below 100 float32 epsilons (relative).
* normflows: ``Residual(LipschitzMLP([p, h, h, p], lipschitz_const=coeff, init_zeros=True),
  reduce_memory=True)``, the same four-layer pattern with a Swish *before* the first linear layer too.
  Its power iterations are not run inside the forward pass: the training loop calls
  ``normflows.utils.update_lipschitz(model, --nf-power)`` after every optimiser step (as its
  documentation's examples do; default 1 iteration, the same as coursekit's), and 200 iterations
  before evaluating. Log-determinant in training: 2 exact terms then a geometric number (``p = 0.5``, 2 extra
  terms on average), Gaussian probe, Neumann gradient, computed with backward-in-forward; in evaluation
  mode 20 exact terms then the geometric tail (exact brute force in 2-D), which makes its log-density
  calls more expensive than its training calls. Inverse: fixed point until a per-coordinate tolerance
  of 1e-5 (absolute and relative). The two stopping rules give different accuracies (the script prints each
  library's round-trip error), so the inverses are timed twice: with each library's own rule, and at an equal
  error (coursekit's loosest tolerance on a grid whose round trip is no worse than normflows'; the last
  column). ``--inverse-tol`` sets coursekit's tolerance in the first.

The NLL protocol: moons, 4000 training points (seed 0) and 4000 test points (seed 1); digits, pixels k in
{0..16} dequantised afresh for every batch, y = (k + u)/17, and sent to logit space by coursekit's ``Logit``
(alpha 0.05), whose log-determinant is added for both libraries; the validation NLL (each library's own
estimator, evaluation mode) is computed every ``--val-every`` steps and the best state kept; the test NLL is
the exact one, reported as the dequantisation bound -log p(y) + 64 log 17 nats per image in bits/dim, with
the same noise for both libraries. Figures are from one machine and one seed: rerun before quoting.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's coursekit
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, n_params, print_tables, speed_table  # noqa: E402

K = 17  # digits' pixel values 0..16


@dataclass
class Model:
    """One library's model seen through the same small interface."""

    name: str
    module: torch.nn.Module
    log_prob: Callable[[torch.Tensor], torch.Tensor]  # the library's own (stochastic) estimate
    sample: Callable[[int], torch.Tensor]
    density_map: Callable[[torch.Tensor], torch.Tensor]  # x -> z, no log-determinant (for exact scoring)
    # z -> x by the fixed points, no log-determinant; the optional tolerance is coursekit's (normflows has its own rule)
    inverse_map: Callable[[torch.Tensor, float | None], torch.Tensor]
    after_step: Callable[[], None] | None = None
    before_eval: Callable[[], None] | None = None


def build_coursekit(p, args) -> Model:
    from coursekit.flows import ActNorm, Flow, ResidualBlock, make_residual_flow, set_validation

    set_validation(False)  # the input checks synchronise with a GPU; normflows has none
    flow = Flow(make_residual_flow(p, n_blocks=args.blocks, hidden=(args.hidden, args.hidden), coeff=args.coeff,
                                   explicit="inverse", logdet="roulette"))

    def density_map(x):
        for m in reversed(flow.transform.maps):
            if isinstance(m, ResidualBlock):
                x = x + m.g(x)  # explicit="inverse": z = x + g(x)
            else:
                assert isinstance(m, ActNorm)
                x = m.inverse(x)[0]
        return x

    def inverse_map(z, tol=None):
        # the fixed point of ResidualBlock's own sampling direction, without its log-determinant estimate
        from coursekit.flows._iterative import default_tol, solve

        if tol is None:
            tol = args.inverse_tol if args.inverse_tol is not None else default_tol(z.dtype)
        for m in flow.transform.maps:
            if isinstance(m, ResidualBlock):
                ws, L = m.g.weights(), m.lipschitz_bound
                z = solve(lambda t, y=z, ws=ws, m=m: y - m.g.evaluate(ws, t), z, z, tol,
                          m.max_iter, L / (1 - L), "ResidualBlock", "")
            else:
                z = m(z)[0]
        return z

    return Model("coursekit", flow, flow.log_prob, flow.sample, density_map, inverse_map)


def build_normflows(p, args) -> Model:
    import normflows as nf

    flows = []
    for _ in range(args.blocks):
        net = nf.nets.LipschitzMLP([p, args.hidden, args.hidden, p], lipschitz_const=args.coeff, init_zeros=True)
        flows += [nf.flows.Residual(net, reduce_memory=True), nf.flows.ActNorm(p)]
    model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(p, trainable=False), flows=flows)

    def density_map(x):
        for f in reversed(model.flows):
            if isinstance(f, nf.flows.Residual):
                x = f.iresblock.forward(x)  # reverse=True: the density direction is x + g(x)
            else:
                x = f.inverse(x)[0]
        return x

    def inverse_map(z, tol=None):  # normflows' own stopping rule: tol is not used
        for f in model.flows:
            z = f.iresblock.inverse(z) if isinstance(f, nf.flows.Residual) else f(z)[0]
        return z

    return Model("normflows", model, model.log_prob, lambda n: model.sample(n)[0], density_map, inverse_map,
                 after_step=lambda: nf.utils.update_lipschitz(model, args.nf_power),
                 before_eval=lambda: nf.utils.update_lipschitz(model, 200))


BUILDERS = {"coursekit": build_coursekit, "normflows": build_normflows}
_TOL_GRID = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)  # coursekit tolerances tried for the equal-error inverse


class PixelDensity(torch.nn.Module):
    """A model on logit space as a density of dequantised pixels in [0, 1)^64 (coursekit's Logit in front)."""

    def __init__(self, model: Model):
        from coursekit.flows import Logit

        super().__init__()
        self.inner, self.logit = model, Logit(64)
        self.add_module("module", model.module)

    def log_prob(self, y):
        w, ld = self.logit.inverse(y)
        return self.inner.log_prob(w) + ld

    def exact_log_prob(self, y):
        w, ld = self.logit.inverse(y)
        return exact_log_prob(self.inner.density_map, w) + ld


def exact_log_prob(density_map, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """log N(z; 0, I) + log|det dz/dx| with the Jacobian of the row-wise map from autograd (p backward passes)."""
    out = []
    for xc in x.split(chunk):
        xc = xc.detach().requires_grad_()
        with torch.enable_grad():
            z = density_map(xc)
            p = z.shape[1]
            rows = [torch.autograd.grad(z[:, i].sum(), xc, retain_graph=i < p - 1)[0] for i in range(p)]
        J = torch.stack(rows, 1)
        log_base = -0.5 * (z.detach() ** 2).sum(1) - 0.5 * p * math.log(2 * math.pi)
        out.append(log_base + torch.linalg.slogdet(J)[1])
    return torch.cat(out)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def speed(args, device, trained=None, data=None) -> Table:
    """Interleaved rounds: each round times every library on every measure, in alternating order.

    ``trained``: the models trained on the digits (their fixed points then take as many iterations as a
    trained model needs), timed on ``data`` (logits of dequantised digits); otherwise fresh models (near the
    identity: few iterations) on Gaussian data of dimension ``--dim``."""
    batch = args.batch
    models, opts = {}, {}
    for name, build in BUILDERS.items():
        if trained is None:
            torch.manual_seed(0)
            np.random.seed(0)
            models[name] = build(args.dim, args)
            models[name].module.to(device)
        else:
            models[name] = trained[name]
        opts[name] = torch.optim.Adam([q for q in models[name].module.parameters() if q.requires_grad], lr=1e-5)
    gen = torch.Generator().manual_seed(1)
    if data is None:
        x = torch.randn(batch, args.dim, generator=gen).to(device)
    else:
        x = data[torch.randint(0, data.shape[0], (batch,), generator=gen)].to(device)
    p = x.shape[1]
    z = torch.randn(batch, p, generator=gen).to(device)  # latent points: the inverse's input

    def train_steps(m):
        m.module.train()
        for _ in range(args.steps):
            opts[m.name].zero_grad(set_to_none=True)
            loss = -m.log_prob(x).mean()
            loss.backward()
            opts[m.name].step()
            if m.after_step:
                m.after_step()

    def prepare(m):
        """Evaluation mode, spectral norms converged for the current weights (untimed)."""
        m.module.eval()
        if m.before_eval:
            m.before_eval()
        with torch.no_grad():
            m.log_prob(x[:2])

    def density(m):
        with torch.no_grad():
            m.log_prob(x)

    def inverse(m):
        with torch.no_grad():
            m.inverse_map(z)

    def roundtrip(m, tol=None) -> float:
        with torch.no_grad():
            return (m.density_map(m.inverse_map(z, tol)) - z).abs().max().item()

    def sampling(m):
        with torch.no_grad():
            m.sample(batch)

    measures = {"train": train_steps, "density": density, "inverse": inverse, "sample": sampling}
    for m in models.values():  # warm-up (ActNorm initialisation, allocations)
        train_steps(m)
        prepare(m)
        density(m)
        inverse(m)
    # The two stopping rules reach different accuracies, so the inverses are also timed at an equal
    # error: coursekit's loosest tolerance on a grid whose round trip is no worse than normflows'.
    matched = None
    if {"coursekit", "normflows"} <= set(models):
        target = roundtrip(models["normflows"])
        matched = next((t for t in _TOL_GRID if roundtrip(models["coursekit"], t) <= target), None)
    if matched is not None:
        def inverse_matched(m):
            with torch.no_grad():
                m.inverse_map(z, matched)

        measures = {**measures, "inverse_eq": inverse_matched}
    times = {k: {name: [] for name in models} for k in measures}
    names = list(models)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for measure, fn in measures.items():
            for name in order:
                if measure == "density":
                    prepare(models[name])
                times[measure][name].append(_timed(lambda fn=fn, m=models[name]: fn(m)))
    lip = args.coeff**3
    q = (1 - lip**2) / 2
    errors = ", ".join(f"{name} {roundtrip(models[name]):.1e}" for name in names)
    if matched is not None:
        equal = (f"At an equal error (the last column): coursekit's tolerance {matched:g}, the loosest of "
                 f"{', '.join(f'{t:g}' for t in _TOL_GRID)} whose round trip was no worse than normflows' before "
                 f"the rounds; after them coursekit {roundtrip(models['coursekit'], matched):.1e}, normflows "
                 f"{roundtrip(models['normflows']):.1e}.")
    else:
        equal = "No tolerance of the grid matched normflows' round-trip error: no equal-error column."
    what = "trained digits models, on digits in logit space" if trained else "untrained models, Gaussian data"
    return speed_table(
        f"Residual flows, p = {p}, batch {batch}, {what}, {device}",
        times, {"train": args.steps, "density": batch, "inverse": batch, "sample": batch, "inverse_eq": batch},
        {"train": "train steps/s", "density": "log-densities/s", "inverse": "inverses/s", "sample": "samples/s",
         "inverse_eq": "inverses/s at an equal error"},
        "coursekit", {name: n_params(models[name].module) for name in names},
        notes=[f"Log-determinant terms per call on average: coursekit {2 + (1 - q) / q:.1f}; normflows 4 in "
               f"training, 22 in evaluation mode. Training: {args.steps} Adam steps (lr 1e-5) per call; "
               "inverses: the fixed points of all blocks without log-determinants; samples: inverse and "
               "log-determinant estimate.",
               f"Round trip |T^-1(T(z)) - z| (each library's own stopping rule): {errors}.", equal],
    )


def train(model: Model, density, data, steps, batch, lr, seed, transform=None, val=None, val_every=200):
    """The loop both libraries get: Adam, uniform batch draws from a shared seed, optional validation
    with the best state kept. Returns the wall time."""
    params = [q for q in density.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    best, best_state = math.inf, None
    t0 = time.perf_counter()
    for step in range(steps):
        density.train()
        idx = torch.randint(0, data.shape[0], (batch,), generator=gen)
        xb = data[idx] if transform is None else transform(data[idx])
        loss = -density.log_prob(xb).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if model.after_step:
            model.after_step()
        if val is not None and ((step + 1) % val_every == 0 or step + 1 == steps):
            density.eval()
            if model.before_eval:
                model.before_eval()
            with torch.no_grad():
                v = float(-density.log_prob(val).mean())
            if v < best:
                best, best_state = v, copy.deepcopy(density.state_dict())
    if best_state is not None:
        density.load_state_dict(best_state)
    density.eval()
    if model.before_eval:
        model.before_eval()
    return time.perf_counter() - t0


def nll(args, device) -> tuple[Table, dict, torch.Tensor]:
    from coursekit.data import load_digits_split, sample_toy
    from coursekit.flows import bits_per_dim, uniform_dequantize

    moons_train = sample_toy("moons", 4000, seed=0).to(device)
    moons_test = sample_toy("moons", 4000, seed=1).to(device)
    digits = load_digits_split(seed=0, device=device)
    rows, trained = {}, {}
    for name, build in BUILDERS.items():
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        model = build(2, args)
        model.module.to(device)
        s_moons = train(model, model.module, moons_train, args.steps_moons, 256, args.lr, args.seed)
        moons_nll = float(-exact_log_prob(model.density_map, moons_test).mean())

        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        model = build(64, args)
        density = PixelDensity(model).to(device)
        val = uniform_dequantize(digits.val, K, torch.Generator(device=device).manual_seed(7))
        s_digits = train(model, density, digits.train, args.steps_digits, 128, args.lr, args.seed,
                         transform=lambda k: uniform_dequantize(k, K), val=val, val_every=args.val_every)
        test_y = uniform_dequantize(digits.test, K, torch.Generator(device=device).manual_seed(123))
        nats = float(-density.exact_log_prob(test_y).mean()) + 64 * math.log(K)
        rows[name] = (moons_nll, bits_per_dim(nats, 64), s_moons, s_digits, n_params(model.module))
        trained[name] = model
    table = Table(
        f"Residual flows: test NLL at an equal budget, seed {args.seed}, exact log-determinants, {device}",
        ["library", "digits params", "moons (nats)", "digits (bits/dim)", "moons train s", "digits train s"])
    for name, (mn, bpd, sm, sd, npar) in rows.items():
        table.rows.append([name, f"{npar:,}", f"{mn:.3f}", f"{bpd:.3f}", f"{sm:.0f}", f"{sd:.0f}"])
    table.notes = [f"Moons: {args.steps_moons} steps of 256; digits: {args.steps_digits} steps of 128, best "
                   f"validation state kept (every {args.val_every} steps); Adam lr {args.lr}; one seed: rerun "
                   "with others before quoting a difference."]
    from coursekit.flows import Logit

    logits = Logit(64).inverse(uniform_dequantize(digits.train, K, torch.Generator(device=device).manual_seed(5)))[0]
    return table, trained, logits


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=64, help="dimension for the speed figures with --no-nll")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--coeff", type=float, default=0.9, help="spectral norm bound of every linear layer of g")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--nf-power", type=int, default=1, help="normflows' power iterations after each step")
    ap.add_argument("--no-nll", action="store_true", help="speed only")
    ap.add_argument("--inverse-tol", type=float, default=None,
                    help="coursekit's fixed-point tolerance in the inverse timing (relative Banach bound; default: "
                         "its own, 100 float32 epsilons): raise it to compare the two inverses at an equal "
                         "round-trip error")
    ap.add_argument("--steps-moons", type=int, default=1000)
    ap.add_argument("--steps-digits", type=int, default=1000)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def results(argv=None) -> list[Table]:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.no_nll:
        return [speed(args, device)]
    table, trained, logits = nll(args, device)
    return [table, speed(args, device, trained, logits)]


def main(argv=None):
    import normflows

    args = parser().parse_args(argv)
    print(f"residual flows: {args.blocks} blocks, g with layers (p, {args.hidden}, {args.hidden}, p) of spectral "
          f"norm <= {args.coeff} (Lip(g) <= {args.coeff**3:.3f}), coursekit vs normflows "
          f"{normflows.__version__}, torch {torch.__version__}, {args.threads} thread(s)", flush=True)
    print_tables(results(argv))


if __name__ == "__main__":
    main()
