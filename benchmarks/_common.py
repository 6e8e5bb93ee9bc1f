"""Timing helpers shared by the peer benchmarks (not a test; see the scripts beside it)."""

from __future__ import annotations

import statistics
import time

import torch


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up (GPU synchronised)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(model, log_prob, sample, x: torch.Tensor, steps: int, repeats: int) -> tuple[float, float, float]:
    """Training steps per second (Adam, NLL of ``x``), log-densities per second and samples per second."""
    device = x.device
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_steps():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = -log_prob(x).mean()
            loss.backward()
            opt.step()

    def density():
        with torch.no_grad():
            log_prob(x)

    def sampling():
        with torch.no_grad():
            sample(x.shape[0])

    t_train = timed(train_steps, device, repeats) / steps
    t_density = timed(density, device, repeats)
    t_sample = timed(sampling, device, repeats)
    return 1 / t_train, x.shape[0] / t_density, x.shape[0] / t_sample


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
