"""The public API driven through bad inputs, by class: every numeric (and boolean, and size-list)
argument of every public function gets every bad value of its kind, and every tensor input
gets the wrong type, dtype, device, shape and NaNs. Each case must raise a ``TypeError`` or
``ValueError`` whose message names the argument: no silent acceptance, no error from torch's
or Python's internals.

The table ``ARGS`` says which kind each argument is; :func:`test_the_table_covers_every_numeric_argument`
reads the signatures of the public API and fails when an argument typed ``int``, ``float`` or
``bool`` is neither in the table nor exempted with a reason, so new arguments cannot be forgotten.

The residual, MintNet, PixelMAF and multi-scale flows and ``coursekit.pixelcnn`` are covered, both
tables. Not covered yet: ``coursekit.flows.autoregressive`` and ``coursekit.made`` (their constructors
are being reworked; their ``dim`` is checked by :class:`~coursekit.flows.base.Bijection`),
``coursekit.score`` (chapter 7, which came after this table) and ``coursekit.plotting`` (figures).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re

import pytest
import torch

from coursekit import config
from coursekit.data import load_digits_split, log_normalizer, log_target, sample_toy
from coursekit.distill import distill, kl_estimate
from coursekit.ebm import (
    FilterBank,
    GaussianEnergy,
    ImageEnergy,
    MaxEntModel,
    MLPEnergy,
    ProductOfExperts,
    ReplayBuffer,
    contrastive_loss,
    decoupled_langevin,
    energy_and_grad,
    fit_maxent,
    log_partition_1d,
    photo_patch,
    sample_1d,
    step_sizes,
    train_ebm,
    ula,
    ula_stationary_variance,
)
from coursekit.flows import (
    MLP,
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Compose,
    Flow,
    GlowStep,
    InvConv1x1,
    Flattened,
    InvConv1x1LU,
    Logit,
    MintLayer,
    MultiScale,
    PixelMAF,
    Planar,
    Radial,
    Rescale,
    ResidualBlock,
    Reverse,
    SpectralNormConv2d,
    SpectralNormLinear,
    Squeeze,
    alternating_masks,
    bits_per_dim,
    channel_mask,
    checkerboard_mask,
    discrete_nll,
    half_mask,
    iaf_flow,
    image_checkerboard_mask,
    maf_flow,
    make_glow,
    make_mintnet,
    make_multiscale,
    make_nice,
    make_realnvp,
    make_residual_flow,
    random_partition,
    squeeze,
    uniform_dequantize,
    unsqueeze,
)
from coursekit.flows.planar import solve_monotone
from coursekit.gaussian import (
    fit_gaussian,
    gaussian_log_density,
    gaussian_mle,
    nearest_neighbour_distance,
    robbins_monro,
    sample_empirical,
    sgd_mle,
)
from coursekit.inverse import (
    blur_operator,
    data_fit,
    denoising_operator,
    gaussian_map,
    map_estimate,
    mse,
    psnr,
    random_mask,
    simulate,
)
from coursekit.pixelcnn import GatedPixelCNN, MaskedConv2d, PixelCNN, causal_mask, raster_order
from coursekit.train import TrainingGuard, fit_mle, fit_reverse_kl

NAN, INF = float("nan"), float("inf")
HUGE = 2**70  # beyond int64: never a meaningful count, size or seed

# the bad values of each kind of argument
KINDS: dict[str, list] = {
    "pos_int": [0, -1, 2.5, 2.0, True, "3", None, NAN, HUGE],
    "nonneg_int": [-1, 2.5, True, "3", None, NAN, HUGE],
    "opt_pos_int": [0, -1, 2.5, True, "3", NAN, HUGE],
    "seed": [-1, 2.5, True, "0", HUGE],
    "opt_seed": [-1, 2.5, True, "0", HUGE],
    "pos_float": [0, -1.0, NAN, INF, -INF, True, "1", None],
    "pos_float_or_inf": [0, -1.0, NAN, -INF, True, "1", None],
    "opt_pos_float": [0, -1.0, NAN, INF, True, "1"],
    "nonneg_float": [-1.0, NAN, INF, True, "1", None],
    "unit": [-0.1, 1.5, NAN, INF, True, "0.5", None],
    "unit_open_low": [0.0, -0.1, 1.5, NAN, True, "0.5", None],
    "real": [NAN, INF, -INF, True, "1", None],
    "bool": ["False", None, 2],
    "int_seq": [(), (0,), (-1,), (2.5,), (HUGE,), "ab", 3, None],
    "pair": [(1, -1), (0, 0), (NAN, 1), (1,), "ab", 3],
    "rm_alpha": [0.5, 1.5, NAN, INF, True, "1", None],
    "logit_alpha": [-0.1, 0.5, NAN, INF, True, "0.1", None],
    "parity": [2, -1, 0.5, True, "0", None],
    "split_size": [-1, 1.5, NAN, True, "0.1", None],
    "odd_int": [0, -1, 2, 2.5, 3.0, True, "3", None, NAN, HUGE],  # a 'same' kernel size
    "unit_open": [0.0, 1.0, -0.5, 1.5, NAN, INF, True, "0.5", None],
    "opt_unit_open": [0.0, 1.0, -0.5, 1.5, NAN, INF, True, "0.5"],
    "opt_int_seq": [(), (0,), (-1,), (2.5,), (HUGE,), "ab", 3],
    "size_pair": [(), (2,), (2, 2, 2), (0, 2), (-1, 2), (2.5, 2), (True, 2), (HUGE, 2), "ab", 3, None],
    "opt_size_pair": [(), (2,), (2, 2, 2), (0, 2), (-1, 2), (2.5, 2), (True, 2), (HUGE, 2), "ab", 3],
    "image_shape": [(), (1, 2), (1, 2, 2, 2), (0, 2, 2), (1, -1, 2), (1, 2.5, 2), (1, HUGE, 2), "abc", 3, None],
}


def _flow(dim=2):
    torch.manual_seed(0)
    return Flow(Compose(*[Planar(dim) for _ in range(2)]))


def _energy():
    torch.manual_seed(0)
    return MLPEnergy(2, hidden=8, depth=1)


def _patch():
    return torch.randn(12, 12, generator=torch.Generator().manual_seed(0))


def _linear(x, mean, log_std):
    return gaussian_log_density(x, mean, log_std)


def _solve(**kw):
    t = torch.tensor([0.5, -3.0])
    return solve_monotone(lambda a: (a + a.tanh(), 2 - a.tanh() ** 2), t, t - 2, t + 2, **kw)


# (name, function, valid keyword arguments, {argument: kind}); the function is called with the
# valid arguments and one of them replaced by a bad value
ARGS = [
    ("fit_mle", lambda **k: fit_mle(_flow(), torch.randn(32, 2), **k),
     dict(steps=1, batch_size=8, lr=1e-3, weight_decay=0.0, clip=1.0, seed=0, val_every=1),
     dict(steps="pos_int", batch_size="pos_int", lr="pos_float", weight_decay="nonneg_float", clip="opt_pos_float",
          seed="opt_seed", val_every="pos_int")),
    ("fit_reverse_kl", lambda **k: fit_reverse_kl(_flow(), log_target("U1"), **k),
     dict(steps=1, n_samples=8, lr=1e-3, anneal=0, clip=1.0),
     dict(steps="pos_int", n_samples="pos_int", lr="pos_float", anneal="nonneg_int", clip="opt_pos_float")),
    ("distill", lambda **k: distill(iaf_flow(2, 1, hidden=(4,)), maf_flow(2, 1, hidden=(4,)), **k),
     dict(steps=1, batch_size=8, lr=1e-3, max_grad_norm=1.0, cosine=True),
     dict(steps="pos_int", batch_size="pos_int", lr="pos_float", max_grad_norm="opt_pos_float", cosine="bool")),
    ("kl_estimate", lambda **k: kl_estimate(iaf_flow(2, 1, hidden=(4,)), maf_flow(2, 1, hidden=(4,)), **k),
     dict(n=8), dict(n="pos_int")),
    ("TrainingGuard", lambda **k: TrainingGuard(_flow(), None, **k), dict(check_every=5), dict(check_every="pos_int")),
    # flows
    ("Bijection", lambda **k: Reverse(**k), dict(dim=2), dict(dim="pos_int")),
    ("Planar", lambda **k: Planar(**k), dict(dim=2, init_scale=0.5),
     dict(dim="pos_int", init_scale=["nan", -1.0, NAN, INF, True, "1"])),
    ("Radial", lambda **k: Radial(**k), dict(dim=2), dict(dim="pos_int")),
    ("Rescale", lambda **k: Rescale(**k), dict(dim=2), dict(dim="pos_int")),
    ("Logit", lambda **k: Logit(**k), dict(dim=2, alpha=0.05), dict(dim="pos_int", alpha="logit_alpha")),
    ("Flow", lambda **k: Flow(Planar(2), base="uniform", **k), dict(low=-1.0, high=1.0), dict(low="real", high="real")),
    ("Flow.sample", lambda **k: _flow().sample(**k), dict(n=3), dict(n="pos_int")),
    ("Flow.rsample_and_log_prob", lambda **k: _flow().rsample_and_log_prob(**k), dict(n=3), dict(n="pos_int")),
    ("solve_monotone", _solve, dict(max_iter=50, tol=1e-6),
     dict(max_iter="pos_int", tol="opt_pos_float", check_every="opt_pos_int")),
    ("MLP", lambda **k: MLP(**k), dict(n_in=2, n_out=2, hidden=(4,), zero_init=True),
     dict(n_in="pos_int", n_out="pos_int", hidden="int_seq", zero_init="bool")),
    ("AdditiveCoupling", lambda **k: AdditiveCoupling(**k), dict(dim=4, hidden=(4,), zero_init=True),
     dict(dim="pos_int", hidden="int_seq", zero_init="bool")),
    ("AffineCoupling", lambda **k: AffineCoupling(**k), dict(dim=4, hidden=(4,), clamp=3.0, shift="before"),
     dict(dim="pos_int", hidden="int_seq", clamp="opt_pos_float", shift=["middle", "After", None, True, 1])),
    ("half_mask", lambda **k: half_mask(**k), dict(dim=4, flip=False), dict(dim="pos_int", flip="bool")),
    ("random_partition", lambda **k: random_partition(**k), dict(dim=4), dict(dim="pos_int")),
    ("checkerboard_mask", lambda **k: checkerboard_mask(**k), dict(shape=(2, 2), parity=0),
     dict(shape="int_seq", parity="parity")),
    ("alternating_masks", lambda **k: alternating_masks(**k), dict(dim=4, n_layers=2),
     dict(dim="pos_int", n_layers="pos_int")),
    ("make_nice", lambda **k: make_nice(**k), dict(dim=4, n_layers=2, hidden=(4,), rescale=True),
     dict(dim="pos_int", n_layers="pos_int", hidden="int_seq", rescale="bool")),
    ("make_realnvp", lambda **k: make_realnvp(**k), dict(dim=4, n_layers=2, hidden=(4,), clamp=3.0),
     dict(dim="pos_int", n_layers="pos_int", hidden="int_seq", clamp="opt_pos_float")),
    ("ActNorm", lambda **k: ActNorm(**k), dict(dim=2, eps=1e-6), dict(dim="pos_int", eps="pos_float")),
    ("ActNorm", lambda **k: ActNorm(2, **k), dict(spatial=(2, 2)),
     dict(spatial=[(), (0, 2), (2.5, 2), (2, 2, 2), "ab", 3])),
    ("InvConv1x1", lambda **k: InvConv1x1(**k), dict(dim=2), dict(dim="pos_int")),
    ("InvConv1x1LU", lambda **k: InvConv1x1LU(**k), dict(dim=2), dict(dim="pos_int")),
    ("GlowStep", lambda **k: GlowStep(**k), dict(dim=4, hidden=(4,), lu=True, flip=False, clamp=3.0),
     dict(dim="pos_int", hidden="int_seq", lu="bool", flip="bool", clamp="opt_pos_float")),
    ("make_glow", lambda **k: make_glow(**k), dict(dim=4, n_steps=1, hidden=(4,), clamp=3.0),
     dict(dim="pos_int", n_steps="pos_int", hidden="int_seq", clamp="opt_pos_float")),
    ("uniform_dequantize", lambda **k: uniform_dequantize(torch.zeros(2, 3), **k), dict(levels=4),
     dict(levels="pos_int")),
    ("discrete_nll", lambda **k: discrete_nll(lambda y: y.sum(1), torch.zeros(2, 3), **k), dict(levels=4, n_draws=1),
     dict(levels="pos_int", n_draws="pos_int")),
    ("bits_per_dim", lambda **k: bits_per_dim(**k), dict(nll_nats=1.0, dim=4),
     dict(dim="pos_int", nll_nats=[NAN, True, "1", None])),
    # residual flows (small blocks; power iterations capped so that construction stays fast)
    ("SpectralNormLinear", lambda **k: SpectralNormLinear(**k),
     dict(in_features=2, out_features=3, coeff=0.9, n_power_iterations=1, power_tol=1e-6, max_power_iterations=5),
     dict(in_features="pos_int", out_features="pos_int", coeff="unit_open", n_power_iterations="pos_int",
          power_tol="pos_float", max_power_iterations="pos_int")),
    ("SpectralNormConv2d", lambda **k: SpectralNormConv2d(**k),
     dict(in_channels=1, out_channels=2, kernel_size=3, spatial=(2, 2), coeff=0.9, n_power_iterations=1,
          power_tol=1e-6, max_power_iterations=5),
     dict(in_channels="pos_int", out_channels="pos_int", kernel_size="odd_int", spatial="size_pair", coeff="unit_open",
          n_power_iterations="pos_int", power_tol="pos_float", max_power_iterations="pos_int")),
    ("ResidualBlock", lambda **k: ResidualBlock(**k),
     dict(dim=2, hidden=(4,), kernel_size=3, coeff=0.9, n_terms=2, n_samples=1, n_exact=1, roulette_p=0.5, tol=1e-5,
          max_iter=10, n_power_iterations=1, power_tol=1e-6, max_power_iterations=5),
     dict(dim="pos_int", hidden="opt_int_seq", kernel_size="odd_int", coeff="unit_open", n_terms="pos_int",
          n_samples="pos_int", n_exact="nonneg_int", roulette_p="opt_unit_open", tol="opt_pos_float",
          max_iter="pos_int", n_power_iterations="pos_int", power_tol="pos_float", max_power_iterations="pos_int")),
    ("ResidualBlock", lambda **k: ResidualBlock(1, hidden=(2,), max_power_iterations=5, **k), dict(spatial=(2, 2)),
     dict(spatial="opt_size_pair")),
    ("make_residual_flow", lambda **k: make_residual_flow(hidden=(4,), max_power_iterations=5, **k),
     dict(dim=2, n_blocks=1, spatial=None, actnorm=True),
     dict(dim="pos_int", n_blocks="pos_int", spatial="opt_size_pair", actnorm="bool")),
    # MintNet
    ("MintLayer", lambda **k: MintLayer(**k),
     dict(dim=2, spatial=None, hidden=1, kernel_size=3, reverse=False, step_size=1.0, tol=1e-5, max_iter=10),
     dict(dim="pos_int", spatial="opt_size_pair", hidden="pos_int", kernel_size="odd_int", reverse="bool",
          step_size=[0.0, 2.0, -1.0, NAN, INF, True, "1", None], tol="opt_pos_float", max_iter="pos_int")),
    ("make_mintnet", lambda **k: make_mintnet(**k), dict(dim=2, spatial=None, n_layers=2, hidden=1, kernel_size=3),
     dict(dim="pos_int", spatial="opt_size_pair", n_layers="pos_int", hidden="pos_int", kernel_size="odd_int")),
    # PixelCNN and PixelMAF
    ("causal_mask", lambda **k: causal_mask(**k),
     dict(out_channels=2, in_channels=2, kernel_size=3, n_groups=1, centre=None, reverse=False),
     dict(out_channels="pos_int", in_channels="pos_int", n_groups=KINDS["pos_int"] + [3], reverse="bool",
          kernel_size=KINDS["pos_int"] + [(0, 3), (3,), (3, 3, 3), (2.5, 3), (True, 3)],
          centre=[(-1, 1), (3, 1), (1, 3), (0.5, 1), (True, 1), (1,), (1, 1, 1), "ab", 3])),
    ("raster_order", lambda **k: raster_order(**k), dict(shape=(2, 1, 2), reverse=False),
     dict(shape="image_shape", reverse="bool")),
    ("MaskedConv2d", lambda **k: MaskedConv2d(**k), dict(in_channels=2, out_channels=4, kernel_size=3, n_groups=2),
     dict(in_channels="pos_int", out_channels="pos_int", kernel_size="odd_int", n_groups=KINDS["pos_int"] + [3])),
    ("GatedPixelCNN", lambda **k: GatedPixelCNN(**k),
     dict(channels=2, n_params=2, features=4, n_layers=1, kernel_size=3, zero_init=False, vertical=True),
     dict(channels="pos_int", n_params="pos_int", features=KINDS["pos_int"] + [3], n_layers="pos_int",
          kernel_size="odd_int", zero_init="bool", vertical="bool")),
    ("PixelCNN", lambda **k: PixelCNN(**k), dict(shape=(1, 2, 2), levels=3, features=2, n_layers=1, kernel_size=3),
     dict(shape="image_shape", levels=[1, 0, -1, 2.5, 3.0, True, "3", None, NAN, HUGE], features="pos_int",
          n_layers="pos_int", kernel_size="odd_int")),
    ("PixelCNN.sample", lambda **k: PixelCNN((1, 2, 2), levels=3, features=2, n_layers=1).sample(**k), dict(n=2),
     dict(n="pos_int")),
    ("PixelMAF", lambda **k: PixelMAF(**k),
     dict(dim=2, spatial=None, features=2, n_layers=1, kernel_size=3, bound=5.0, zero_init=True),
     dict(dim="pos_int", spatial="opt_size_pair", features="pos_int", n_layers="pos_int", kernel_size="odd_int",
          bound="pos_float", zero_init="bool")),
    # multi-scale image flows
    ("Squeeze", lambda **k: Squeeze(**k), dict(shape=(1, 2, 2)), dict(shape=KINDS["image_shape"] + [(1, 3, 2)])),
    ("Flattened", lambda **k: Flattened(Reverse(4), **k), dict(shape=(1, 2, 2)),
     dict(shape=KINDS["image_shape"] + [(1, 2, 3)])),
    ("MultiScale", lambda **k: MultiScale(**k), dict(shape=(1, 2, 2)), dict(shape=KINDS["image_shape"] + [(1, 3, 2)])),
    ("image_checkerboard_mask", lambda **k: image_checkerboard_mask(**k), dict(shape=(2, 2, 2), parity=1),
     dict(shape=KINDS["image_shape"] + [(2, 1, 1)], parity="parity")),
    ("channel_mask", lambda **k: channel_mask(**k), dict(shape=(2, 1, 2), flip=True),
     dict(shape=KINDS["image_shape"] + [(1, 2, 2)], flip="bool")),
    ("make_multiscale", lambda **k: make_multiscale(**k), dict(shape=(1, 2, 2), n_scales=1, n_steps=1, hidden=(4,),
                                                               clamp=3.0),
     dict(shape=KINDS["image_shape"] + [(1, 2, 3), (1, 1, 1)], n_scales=KINDS["pos_int"] + [2], n_steps="pos_int",
          hidden="int_seq", clamp="opt_pos_float")),
    # energies and samplers
    ("MLPEnergy", lambda **k: MLPEnergy(**k), dict(dim=2, hidden=4, depth=1, x_quad=0.0),
     dict(dim="pos_int", hidden="pos_int", depth="pos_int", x_quad="nonneg_float")),
    ("ImageEnergy", lambda **k: ImageEnergy(**k), dict(shape=(4, 4), channels=(2, 2), flat=True, x_quad=0.0),
     dict(shape="int_seq", channels="int_seq", flat="bool", x_quad="nonneg_float")),
    ("GaussianEnergy", lambda **k: GaussianEnergy(torch.zeros(2), **k), dict(std=1.0), dict(std="pos_float")),
    ("ProductOfExperts", lambda **k: ProductOfExperts([_energy()], **k), dict(weights=[1.0]),
     dict(weights=[[NAN], [INF], [True], ["1"]])),
    ("Energy.__rmul__", lambda weight: weight * _energy(), dict(weight=2.0), dict(weight="real")),
    ("log_partition_1d", lambda **k: log_partition_1d(lambda x: x**2, **k), dict(lo=-8.0, hi=8.0, n=101),
     dict(lo="real", hi="real", n="pos_int")),
    ("sample_1d", lambda **k: sample_1d(lambda x: x**2, **k), dict(n=4, lo=-8.0, hi=8.0, n_grid=101, stratified=False),
     dict(n="pos_int", lo="real", hi="real", n_grid="pos_int", stratified="bool")),
    ("energy_and_grad", lambda **k: energy_and_grad(_energy(), torch.zeros(3, 2), **k), dict(create_graph=False),
     dict(create_graph="bool")),
    ("ula", lambda **k: ula(_energy(), torch.zeros(3, 2), **k), dict(gamma=0.01, n_steps=2, check_every=0,
                                                                      return_chain=False),
     dict(gamma="pos_float", n_steps="nonneg_int", check_every="nonneg_int", return_chain="bool")),
    ("decoupled_langevin", lambda **k: decoupled_langevin(_energy(), torch.zeros(3, 2), **k),
     dict(step_size=0.01, noise_std=0.1, n_steps=2, grad_clip=1.0, clamp=(-1.0, 1.0), return_chain=False),
     dict(step_size="pos_float", noise_std="nonneg_float", n_steps="nonneg_int", grad_clip="opt_pos_float",
          clamp="pair", return_chain="bool")),
    ("ula_stationary_variance", lambda **k: ula_stationary_variance(**k), dict(s2=1.0, gamma=0.1),
     dict(s2="pos_float", gamma="pos_float")),
    ("step_sizes", lambda **k: step_sizes(**k), dict(gamma=0.1, n_steps=3),
     dict(gamma="pos_float", n_steps="nonneg_int")),
    ("ReplayBuffer", lambda **k: ReplayBuffer(**k), dict(capacity=10), dict(capacity="opt_pos_int")),
    ("ReplayBuffer.sample", lambda **k: ReplayBuffer().sample(like=torch.zeros(1, 2), **k),
     dict(n=3, alpha=0.5, init_std=1.0), dict(n="pos_int", alpha="unit", init_std="pos_float")),
    ("contrastive_loss", lambda **k: contrastive_loss(_energy(), torch.zeros(3, 2), torch.ones(3, 2), **k),
     dict(reg=0.1), dict(reg="nonneg_float")),
    ("train_ebm", lambda **k: train_ebm(_energy(), torch.randn(16, 2), **k),
     dict(n_iter=1, batch_size=4, n_steps=1, gamma=0.01, alpha=0.05, buffer_size=8, reg=0.1, lr=1e-3, init_std=1.0,
          max_energy=1e4),
     dict(n_iter="pos_int", batch_size="pos_int", n_steps="nonneg_int", gamma="pos_float", alpha="unit",
          buffer_size="opt_pos_int", reg="nonneg_float", lr="pos_float", init_std="pos_float",
          max_energy="pos_float_or_inf")),
    ("FilterBank", lambda **k: FilterBank(**k), dict(eps=1e-2), dict(eps="pos_float")),
    ("MaxEntModel.make_proper_", lambda **k: MaxEntModel(_patch()).make_proper_(**k), dict(min_curvature=0.1),
     dict(min_curvature="pos_float")),
    ("fit_maxent", lambda **k: fit_maxent(_patch(), **k),
     dict(n_iter=1, n_chains=2, n_steps=1, gamma=0.01, lr=1e-2, min_curvature=0.1),
     dict(n_iter="pos_int", n_chains="pos_int", n_steps="nonneg_int", gamma="pos_float", lr="pos_float",
          min_curvature="opt_pos_float")),
    ("photo_patch", lambda **k: photo_patch(**k), dict(size=8, top=0, left=0, standardise=True),
     dict(size="pos_int", top="nonneg_int", left="nonneg_int", standardise="bool")),
    # inverse problems
    ("random_mask", lambda **k: random_mask(**k), dict(p=8, keep=0.5), dict(p="pos_int", keep="unit_open_low")),
    ("blur_operator", lambda **k: blur_operator(**k), dict(shape=(2, 2), width=1.0),
     dict(shape="int_seq", width="pos_float")),
    ("denoising_operator", lambda **k: denoising_operator(**k), dict(p=3), dict(p="pos_int")),
    ("simulate", lambda **k: simulate(torch.eye(2), torch.zeros(1, 2), **k), dict(sigma=0.1),
     dict(sigma="nonneg_float")),
    ("data_fit", lambda **k: data_fit(torch.eye(2), torch.zeros(1, 2), x=torch.zeros(1, 2), **k), dict(sigma=0.1),
     dict(sigma="pos_float")),
    ("map_estimate", lambda **k: map_estimate(torch.eye(2), torch.ones(1, 2), log_prior=lambda x: -(x**2).sum(-1), **k),
     dict(sigma=1.0, max_iter=5, tol=1e-7, wall=1e4, box=(-2.0, 2.0)),
     dict(sigma="pos_float", max_iter="pos_int", tol="pos_float", wall="pos_float", box="pair")),
    ("gaussian_map", lambda **k: gaussian_map(torch.eye(2), torch.ones(1, 2), mean=torch.zeros(2), cov=torch.eye(2),
                                              **k),
     dict(sigma=1.0), dict(sigma="pos_float")),
    ("psnr", lambda **k: psnr(torch.zeros(1, 2), torch.ones(1, 2), **k), dict(data_range=16.0),
     dict(data_range="pos_float")),
    # Gaussians
    ("gaussian_mle", lambda **k: gaussian_mle(torch.randn(5, 2), **k), dict(diagonal=False), dict(diagonal="bool")),
    ("fit_gaussian", lambda **k: fit_gaussian(torch.randn(5, 2), **k), dict(jitter=1e-3), dict(jitter="nonneg_float")),
    ("robbins_monro", lambda **k: robbins_monro(**k), dict(k=1, gamma0=0.1, alpha=1.0),
     dict(k="pos_int", gamma0="pos_float", alpha="rm_alpha")),
    ("sgd_mle", lambda **k: sgd_mle(torch.randn(20, 1), _linear, (torch.zeros(1), torch.zeros(1)), **k),
     dict(n_steps=2, batch_size=2, gamma0=0.01, alpha=1.0),
     dict(n_steps="pos_int", batch_size="pos_int", gamma0="pos_float", alpha="rm_alpha")),
    ("sample_empirical", lambda **k: sample_empirical(torch.randn(5, 2), **k), dict(n=3), dict(n="pos_int")),
    ("nearest_neighbour_distance", lambda **k: nearest_neighbour_distance(torch.randn(5, 2), torch.randn(4, 2), **k),
     dict(chunk=2), dict(chunk="pos_int")),
    # data
    ("sample_toy", lambda **k: sample_toy("moons", **k), dict(n=10, seed=0), dict(n="pos_int", seed="seed")),
    ("load_digits_split", lambda **k: load_digits_split(**k), dict(seed=0, val=0.15, test=0.15),
     dict(seed="seed", val="split_size", test="split_size")),
    ("log_target", lambda **k: log_target("U1", **k), dict(wall=4.0), dict(wall="opt_pos_float")),
    ("log_normalizer", lambda **k: log_normalizer("U1", **k), dict(wall=4.0, lim=6.0, n_grid=11),
     dict(wall="pos_float", lim="pos_float", n_grid="pos_int")),
    ("seed_everything", lambda **k: config.seed_everything(**k), dict(seed=0), dict(seed="seed")),
]

# arguments typed int/float/bool in the signatures that the table leaves out, and why
EXEMPT = {
    "guard.value": "the value being guarded: a NaN is what it is for",
    "guard.step": "a label for the message",
    "guard.limit": "internal helper of the trainers",
    "read_losses.pending": "(step, loss) pairs the trainers collect: a NaN loss is what it is for",
    "read_losses.limit": "internal helper of the trainers (guard's limit)",
    "progress.total": "passed to tqdm, which checks it",
    "TrainingGuard.rule": "internal switch of the trainers",
    "TrainingGuard.observe.step": "driven by the trainers",
    "TrainingGuard.observe.value": "a NaN is what it watches for",
    "TrainingGuard.checkpoint.snapshot": "driven by the trainers",
    "TrainingGuard.keep_best.step": "driven by the trainers",
    "TrainingGuard.keep_best.value": "a NaN never wins, by design",
    "Bijection.event_shape": "checked as a size list (tested with Energy.event_shape's checker)",
    "Energy.event_shape": "checked by int_sequence, covered through ImageEnergy.shape",
    "Flow.rsample.n": "delegates to rsample_and_log_prob",
    "Flow.sample_and_log_prob.n": "delegates to rsample_and_log_prob",
    "set_validation.enabled": "any truthy value is meant",
    "check_input.event_shape": "internal: called with a module's own event shape",
    "check_input.finite": "internal",
    "alternating_masks.shape": "only read for kind='checkerboard', checked by checkerboard_mask",
    "make_nice.shape": "passed to alternating_masks",
    "make_realnvp.shape": "passed to alternating_masks",
    "make_nice.zero_init": "passed to AdditiveCoupling (covered)",
    "make_realnvp.zero_init": "passed to AffineCoupling (covered)",
    "make_realnvp.shift": "passed to AffineCoupling (covered)",
    "AffineCoupling.zero_init": "passed to MLP (covered)",
    "make_glow.lu": "passed to GlowStep (covered)",
    "InvConv1x1.spatial": "the same check as ActNorm.spatial (one base class)",
    "InvConv1x1LU.spatial": "the same check as ActNorm.spatial (one base class)",
    "ula.gamma": "covered as a constant; schedules in test_ebm_langevin",
    "decoupled_langevin.clamp": "covered",
    "train_ebm.sampler": "a callable, checked by V.function",
    "EBMTrainingResult.loss": "a record, filled by train_ebm",
    "EBMTrainingResult.e_pos": "a record",
    "EBMTrainingResult.e_neg": "a record",
    "EBMTrainingResult.stopped_at": "a record",
    "EBMTrainingResult.restored_step": "a record",
    "blur_operator.shape": "covered",
    "map_estimate.box": "covered",
    "checkerboard_mask.shape": "covered",
    "load_digits_split.classes": "checked by int_sequence (see test_digits)",
    "setup.seed": "delegates to seed_everything (covered)",
    "setup.verbose": "any truthy value is meant",
    "Settings.seed": "a record made by setup",
    "GaussianEnergy.std": "covered",
    "bits_per_dim.nll_nats": "covered",
    "robbins_monro.k": "covered (an int; tensors of step indices in test_gaussian)",
    "ProductOfExperts.weights": "covered",
}

MODULES = [
    "coursekit.train", "coursekit.distill", "coursekit.inverse", "coursekit.gaussian", "coursekit.flows.base",
    "coursekit.flows.planar", "coursekit.flows.coupling", "coursekit.flows.glow", "coursekit.flows.images",
    "coursekit.ebm.energy", "coursekit.ebm.langevin", "coursekit.ebm.train", "coursekit.ebm.maxent",
    "coursekit.data.toy2d", "coursekit.data.targets", "coursekit.data.digits", "coursekit.config",
    "coursekit.flows.residual", "coursekit.flows.mintnet", "coursekit.flows.pixelmaf", "coursekit.flows.multiscale",
    "coursekit.pixelcnn",
]


def _numeric_parameters():
    """``qualname.argument`` for every public argument annotated int, float or bool."""
    out = set()
    for m in MODULES:
        mod = importlib.import_module(m)
        names = list(mod.__all__) + (["solve_monotone"] if m.endswith("planar") else [])
        for n in names:
            obj = getattr(mod, n)
            if getattr(obj, "__module__", None) != m:
                continue
            targets = []
            if inspect.isclass(obj):
                targets.append((n, obj.__init__))
                targets += [
                    (f"{n}.{k}", v) for k, v in vars(obj).items() if not k.startswith("_") and inspect.isfunction(v)
                ]
            elif inspect.isfunction(obj):
                targets.append((n, obj))
            for q, f in targets:
                try:
                    sig = inspect.signature(f)
                except ValueError:
                    continue
                for p in sig.parameters.values():
                    if p.name != "self" and re.search(r"\b(int|float|bool)\b", str(p.annotation)):
                        out.add(f"{q}.{p.name}")
    return out


def _covered():
    names = set()
    for name, _, _, kinds in ARGS:
        for arg in kinds:
            names.add(f"{name}.{arg}")
    return names


def test_the_table_covers_every_numeric_argument():
    missing = sorted(q for q in _numeric_parameters() if q not in _covered() and q not in EXEMPT)
    assert not missing, f"arguments with no bad-input test and no exemption: {missing}"


def _cases():
    for name, fn, valid, kinds in ARGS:
        for arg, kind in kinds.items():
            values = KINDS[kind] if isinstance(kind, str) else kind
            for v in values:
                yield pytest.param(fn, valid, arg, v, id=f"{name}-{arg}={v!r}"[:90])


CASES = list(_cases())


def _names_argument(message: str, arg: str) -> bool:
    return re.search(rf"(?<![A-Za-z_]){re.escape(arg)}(?![A-Za-z_])", message) is not None


@pytest.mark.parametrize("fn, valid, arg, value", CASES)
def test_bad_argument_gets_a_clear_error(fn, valid, arg, value):
    kwargs = dict(valid, **{arg: value})
    with pytest.raises((TypeError, ValueError)) as info:
        fn(**kwargs)
    assert _names_argument(str(info.value), arg), f"the message does not name {arg!r}: {info.value}"
    assert "Traceback" not in str(info.value)


def test_the_valid_arguments_are_valid():
    """The baseline of every row runs: each bad-input case then fails for its one bad value."""
    for name, fn, valid, _ in ARGS:
        fn(**valid)


def test_there_are_many_generated_cases():
    assert len(CASES) > 500


# ----------------------------------------------------------------------------- tensor inputs

META = torch.empty(0, device="meta")


def _bad_tensors(good: torch.Tensor, kinds: str):
    """Wrong type, dtype, device, shape and values, each derived from a good input."""
    table = {
        "list": good.tolist(),
        "f64": good.double(),
        "int": good.long(),
        "meta": good.to("meta"),
        "nan": good.clone().fill_(NAN),
        "1d": good.reshape(-1),
        "rows": torch.cat([good, good]),
    }
    return [(k, table[k]) for k in kinds.split()]


_x2 = torch.zeros(3, 2)
_img = torch.zeros(3, 1, 2, 2)
ALL = "list f64 int meta nan 1d"


def _residual(spatial=None):
    return ResidualBlock(1 if spatial else 2, spatial, hidden=(4,), max_power_iterations=5)


def _pixelmaf(spatial=None):
    return PixelMAF(1 if spatial else 2, spatial, features=2, n_layers=1)


def _multiscale():
    return make_multiscale((1, 2, 2), n_scales=1, n_steps=1, hidden=(4,))


def _pixelcnn():
    return PixelCNN((1, 2, 2), levels=3, features=2, n_layers=1)


TENSORS = [
    ("Planar.inverse", lambda x: Planar(2).inverse(x), _x2, "x", "list f64 int meta nan 1d"),
    ("Planar.forward", lambda z: Planar(2)(z), _x2, "z", "list f64 int meta nan 1d"),
    ("Flow.log_prob", lambda x: _flow().log_prob(x), _x2, "x", "list f64 int meta nan 1d"),
    ("AffineCoupling.inverse", lambda x: AffineCoupling(4).inverse(x), torch.zeros(3, 4), "x", ALL),
    ("ActNorm.inverse", lambda x: ActNorm(2).inverse(x), _x2, "x", "list f64 int meta nan 1d"),
    ("Logit.inverse", lambda x: Logit(2).inverse(x), _x2 + 0.5, "x", "list int nan 1d"),
    ("MLPEnergy", lambda x: _energy()(x), _x2, "x", "list f64 int meta nan 1d"),
    ("Energy.score", lambda x: _energy().score(x), _x2, "x", "list f64 int meta nan 1d"),
    ("ula", lambda x0: ula(_energy(), x0, 0.01, 1), _x2, "x0", "list f64 int meta nan 1d"),
    ("decoupled_langevin", lambda x0: decoupled_langevin(_energy(), x0, 0.01, 0.1, 1), _x2, "x0",
     "list f64 int meta nan 1d"),
    ("train_ebm", lambda data: train_ebm(_energy(), data, n_iter=1, batch_size=2, n_steps=1), _x2, "data",
     "list f64 int meta nan 1d"),
    ("fit_mle", lambda data: fit_mle(_flow(), data, steps=1, batch_size=2), _x2, "data", "list nan 1d"),
    ("fit_mle val", lambda val_data: fit_mle(_flow(), _x2, steps=1, batch_size=2, val_data=val_data), _x2,
     "val_data", "list nan 1d"),
    ("simulate", lambda x: simulate(torch.eye(2), x, 0.1), _x2, "x", "list f64 int meta nan 1d"),
    ("data_fit y", lambda y: data_fit(torch.eye(2), y, 0.1, _x2), _x2, "y", "list f64 int meta nan 1d rows"),
    ("data_fit x", lambda x: data_fit(torch.eye(2), _x2, 0.1, x), _x2, "x", "list f64 int meta nan 1d rows"),
    ("map_estimate y", lambda y: map_estimate(torch.eye(2), y, 1.0, lambda x: -(x**2).sum(-1)), _x2, "y",
     "list f64 int meta nan 1d"),
    ("map_estimate x0", lambda x0: map_estimate(torch.eye(2), _x2, 1.0, lambda x: -(x**2).sum(-1), x0=x0), _x2,
     "x0", "list meta nan 1d rows"),
    ("gaussian_log_density x", lambda x: gaussian_log_density(x, torch.zeros(2), torch.zeros(2)), _x2, "x",
     "list int nan 1d"),
    ("gaussian_log_density mean", lambda mean: gaussian_log_density(_x2, mean, torch.zeros(2)), torch.zeros(2),
     "mean", "list f64 meta"),
    ("nearest_neighbour_distance", lambda samples: nearest_neighbour_distance(samples, _x2), _x2, "samples",
     "list int nan 1d"),
    ("gaussian_map mean", lambda mean: gaussian_map(torch.eye(2), _x2, 1.0, mean, torch.eye(2)), torch.zeros(2),
     "mean", "list f64 int meta nan"),
    ("mse", lambda x: mse(_x2, x), _x2, "x", "list f64 meta"),
    ("solve_monotone lo", lambda lo: solve_monotone(lambda a: (a, torch.ones_like(a)), torch.zeros(3), lo,
                                                    torch.ones(3)), -torch.ones(3), "lo", "list f64 int rows"),
    ("uniform_dequantize", lambda k: uniform_dequantize(k, 4), _x2, "k", "list"),
    ("GaussianEnergy mean", lambda mean: GaussianEnergy(mean), torch.zeros(2), "mean", "nan"),
    # residual, MintNet, PixelMAF and multi-scale maps, on vectors and on images (C, H, W) = (1, 2, 2)
    ("ResidualBlock.inverse", lambda x: _residual().inverse(x), _x2, "x", ALL),
    ("ResidualBlock.forward", lambda z: _residual()(z), _x2, "z", ALL),
    ("ResidualBlock.inverse image", lambda x: _residual((2, 2)).inverse(x), _img, "x", ALL),
    ("MintLayer.inverse", lambda x: MintLayer(2, hidden=1).inverse(x), _x2, "x", ALL),
    ("MintLayer.forward", lambda z: MintLayer(2, hidden=1)(z), _x2, "z", ALL),
    ("MintLayer.inverse image", lambda x: MintLayer(1, (2, 2), hidden=1).inverse(x), _img, "x", ALL),
    ("MintLayer.jacobian_diagonal", lambda z: MintLayer(2, hidden=1).jacobian_diagonal(z), _x2, "z", ALL),
    ("PixelMAF.inverse", lambda x: _pixelmaf().inverse(x), _x2, "x", ALL),
    ("PixelMAF.forward", lambda z: _pixelmaf()(z), _x2, "z", ALL),
    ("PixelMAF.inverse image", lambda x: _pixelmaf((2, 2)).inverse(x), _img, "x", ALL),
    ("PixelMAF.conditioner", lambda x: _pixelmaf().conditioner(x), _x2, "x", ALL),
    ("MultiScale.inverse", lambda x: _multiscale().inverse(x), _img, "x", ALL),
    ("MultiScale.forward", lambda z: _multiscale()(z), _img, "z", ALL),
    ("Flow(make_multiscale).log_prob", lambda x: Flow(_multiscale()).log_prob(x), _img, "x", ALL),
    ("Flattened.inverse", lambda x: Flattened(AffineCoupling(4, hidden=(4,)), (1, 2, 2)).inverse(x), _img, "x", ALL),
    # a squeeze is a permutation, with no parameters: any floating dtype and any device will do
    ("Squeeze.inverse", lambda x: Squeeze((1, 2, 2)).inverse(x), _img, "x", "list int nan 1d"),
    ("Squeeze.forward", lambda z: Squeeze((1, 2, 2))(z), _img.view(3, 4, 1, 1), "z", "list int nan 1d"),
    ("squeeze", lambda x: squeeze(x), _img, "x", "list 1d"),
    ("unsqueeze", lambda z: unsqueeze(z), _img.view(3, 4, 1, 1), "z", "list 1d"),
    # PixelCNN reads integer levels of any dtype
    ("PixelCNN.log_prob", lambda k: _pixelcnn().log_prob(k), _img, "k", "list meta nan 1d"),
    ("PixelCNN.logits", lambda k: _pixelcnn().logits(k), _img, "k", "list meta nan 1d"),
    ("GatedPixelCNN", lambda x: GatedPixelCNN(1, 2, features=2, n_layers=1)(x), _img, "x", ALL),
]


def _tensor_cases():
    for name, fn, good, arg, kinds in TENSORS:
        for kind, bad in _bad_tensors(good, kinds):
            yield pytest.param(fn, arg, bad, id=f"{name}-{kind}")


@pytest.mark.parametrize("fn, arg, value", list(_tensor_cases()))
def test_bad_tensor_gets_a_clear_error(fn, arg, value):
    with pytest.raises((TypeError, ValueError)) as info:
        fn(value)
    msg = str(info.value)
    assert _names_argument(msg, arg), f"the message does not name {arg!r}: {msg}"
    assert "mat1 and mat2" not in msg and "Expected all tensors" not in msg


def test_dtype_and_device_messages_say_what_to_call():
    with pytest.raises(TypeError, match=r"x is float64 on cpu, expected float32 on cpu .*call x\.to\(torch\.float32\)"):
        Planar(2).inverse(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected float32 on cpu .*call x\.to\('cpu'\)"):
        Planar(2).inverse(torch.zeros(3, 2, device="meta"))
    with pytest.raises(TypeError, match=r"data is int64 on cpu, expected float32 on cpu"):
        train_ebm(_energy(), torch.zeros(4, 2, dtype=torch.long), n_iter=1, batch_size=2, n_steps=1)


def test_the_tensor_table_is_large():
    assert len(list(_tensor_cases())) > 100


def test_truncation_and_degenerate_constructors_are_refused():
    """The silent wrong answers of the issue, one per class."""
    with pytest.raises(TypeError, match="dim must be a positive integer, got 2.5"):
        Reverse(2.5)
    with pytest.raises(TypeError, match="dim"):
        Logit(2.5)
    with pytest.raises(ValueError, match="hidden"):
        AffineCoupling(4, hidden=(0,))
    with pytest.raises(ValueError, match="std must be positive and finite"):
        GaussianEnergy(torch.zeros(2), std=INF)
    with pytest.raises(ValueError, match="mean contains NaN"):
        GaussianEnergy(torch.tensor([0.0, NAN]))
    with pytest.raises(ValueError, match="grad_clip"):
        decoupled_langevin(_energy(), _x2, 0.1, 0.1, 1, grad_clip=-1)
    with pytest.raises(ValueError, match="clamp"):
        decoupled_langevin(_energy(), _x2, 0.1, 0.1, 1, clamp=(1, -1))
    with pytest.raises(ValueError, match="clip"):
        fit_mle(_flow(), _x2, steps=1, clip=-1)
    with pytest.raises(ValueError, match="clip"):
        fit_mle(_flow(), _x2, steps=1, clip=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        distill(iaf_flow(2, 1, hidden=(4,)), maf_flow(2, 1, hidden=(4,)), max_grad_norm=-1)
    with pytest.raises(ValueError, match="max_iter"):
        map_estimate(torch.eye(2), _x2, 1.0, lambda x: -(x**2).sum(-1), max_iter=0)
    with pytest.raises(ValueError, match=r"observations y has shape \(2, 1\), expected \(n, 3\)"):
        data_fit(torch.eye(3), torch.zeros(2, 1), 1.0, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="sigma"):
        data_fit(torch.eye(3), torch.zeros(2, 3), 0.0, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="Energy.score input x must be a torch.Tensor"):
        _energy().score([[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"x0 has shape \(3,\).*unsqueeze"):
        ula(GaussianEnergy(torch.zeros(1)), torch.zeros(3), 0.1, 1)
    assert math.isfinite(float(bits_per_dim(1.0, 4)))


def test_the_new_modules_refuse_what_used_to_slip_through():
    """Silent acceptances and torch-internal errors of the residual, MintNet, PixelCNN and multi-scale code."""
    with pytest.raises(ValueError, match="hidden"):  # used to build a linear g in silence
        ResidualBlock(2, hidden=())
    with pytest.raises(TypeError, match="reverse must be True or False"):  # "False" is truthy: used to reverse
        raster_order((1, 2, 2), reverse="False")
    with pytest.raises(ValueError, match=r"shape must be an image shape \(C, H, W\)"):  # used to fail to unpack
        raster_order((2, 2))
    with pytest.raises(ValueError, match=r"centre must be the kernel position .* got \(3, 1\)"):  # an IndexError
        causal_mask(1, 1, 3, centre=(3, 1))
    with pytest.raises(ValueError, match=r"n_groups must be an integer in \[1, 2\], got 3"):  # an empty colour group
        causal_mask(2, 4, 3, n_groups=3)
    with pytest.raises(ValueError, match=r"x has shape \(3, 2, 2, 2\), expected \(batch, 1, H, W\)"):
        GatedPixelCNN(1, 2, features=2, n_layers=1)(torch.zeros(3, 2, 2, 2))  # used to fail inside conv2d
    with pytest.raises(ValueError, match=r"k is float32 on meta, expected .* on cpu"):  # used to fail in .item()
        _pixelcnn().log_prob(_img.to("meta"))
    with pytest.raises(ValueError, match="at least 2 pixels per channel, got shape \\(2, 1, 1\\): use channel_mask"):
        image_checkerboard_mask((2, 1, 1))
    assert Squeeze((1, 2, 2)).inverse(_img.to("meta"))[0].shape == (3, 4, 1, 1)  # a permutation: any device
