"""coursekit.score.train: every objective recovers a Gaussian fit (DSM: the noised one), DSM's fitted
network approaches the score of the noised mixture; progress bar, divergence guard, clear errors."""

import math

import pytest
import torch
from torch import nn

import coursekit.score.train as score_train
from coursekit.ebm import Energy
from coursekit.score import GaussianMixture, NoiseConditionalScore, ScoreMLP, geometric_sigmas, train_score
from coursekit.train import TrainingDiverged


class LearnableGaussian(Energy):
    def __init__(self):
        super().__init__((1,))
        self.m = nn.Parameter(torch.zeros(()))
        self.log_s = nn.Parameter(torch.zeros(()))

    def _energy(self, x):
        return ((x[:, 0] - self.m) ** 2) / (2 * torch.exp(2 * self.log_s))


@pytest.mark.parametrize("objective,sigma", [("exact", None), ("sliced", None), ("dsm", 0.5)])
def test_score_matching_recovers_the_gaussian(objective, sigma):
    g = torch.Generator().manual_seed(0)
    data = 1.5 + 0.7 * torch.randn(20_000, 1, generator=g)
    U = LearnableGaussian()
    train_score(U, data, objective=objective, n_iter=600, batch_size=256, lr=3e-2, sigma=sigma, generator=g)
    std = math.sqrt(0.7**2 + (sigma or 0.0) ** 2)  # DSM fits the noised law N(1.5, 0.7^2 + sigma^2)
    assert abs(U.m.item() - 1.5) < 0.05 and abs(U.log_s.exp().item() - std) < 0.05, (U.m.item(), U.log_s.exp().item())


def test_dsm_network_approaches_the_noised_score():
    torch.manual_seed(0)
    mix = GaussianMixture(torch.tensor([[-2.0], [2.0]]), 0.5, torch.tensor([0.7, 0.3]))
    g = torch.Generator().manual_seed(1)
    data = mix.sample(20_000, generator=g)
    sigma = 0.5
    s = ScoreMLP(1, hidden=64)
    train_score(s, data, objective="dsm", sigma=sigma, n_iter=800, batch_size=256, lr=5e-3, generator=g)
    x = mix.noised(sigma).sample(5_000, generator=g)
    with torch.no_grad():
        err_noised = (s(x) - mix.noised(sigma).score(x)).pow(2).mean().item()
        err_clean = (s(x) - mix.score(x)).pow(2).mean().item()
    assert err_noised < 0.1 and err_noised < 0.2 * err_clean, (err_noised, err_clean)


def test_ncsm_training_runs_and_decreases():
    g = torch.Generator().manual_seed(2)
    data = torch.randn(2_000, 2, generator=g)
    r = train_score(NoiseConditionalScore(2, hidden=16), data, objective="ncsm", sigmas=geometric_sigmas(1.0, 0.05, 5),
                    n_iter=300, batch_size=128, lr=3e-3, generator=g)
    assert len(r.loss) == 300 and sum(r.loss[-50:]) < sum(r.loss[:50]) and r.seconds > 0


def test_progress_bar_and_callback(monkeypatch):
    seen = {}

    def fake_progress(iterable, total=None, desc=""):
        seen["desc"], seen["total"] = desc, total
        return iterable

    monkeypatch.setattr(score_train, "progress", fake_progress)
    calls = []
    train_score(ScoreMLP(2, hidden=8), torch.randn(64, 2), objective="sliced", n_iter=7, batch_size=16,
                callback=lambda it, m: calls.append(it))
    assert seen == {"desc": "score matching (sliced)", "total": 7} and calls == list(range(7))


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1e30))

    def forward(self, x):
        return self.w * x * 1e10


def test_divergence_guard_stops_with_advice():
    with pytest.raises(TrainingDiverged, match=r"step 0.*dsm score matching loss.*raise sigma"):
        train_score(Exploding(), torch.randn(32, 2), objective="dsm", sigma=0.1, n_iter=5, batch_size=8)
    with pytest.raises(TrainingDiverged, match="beyond the limit"):
        train_score(ScoreMLP(2, hidden=8), torch.randn(32, 2), objective="dsm", sigma=1e-3, n_iter=5,
                    batch_size=8, max_loss=10.0)


def test_clear_errors():
    s, x = ScoreMLP(2, hidden=8), torch.randn(32, 2)
    with pytest.raises(ValueError, match="objective='kl' unknown"):
        train_score(s, x, objective="kl", n_iter=1)
    with pytest.raises(ValueError, match="needs the noise level"):
        train_score(s, x, objective="dsm", n_iter=1)
    with pytest.raises(ValueError, match="needs the noise ladder"):
        train_score(NoiseConditionalScore(2), x, objective="ncsm", n_iter=1)
    with pytest.raises(ValueError, match="n_iter must be a positive integer"):
        train_score(s, x, objective="exact", n_iter=0)
    with pytest.raises(ValueError, match="finite"):
        train_score(s, torch.full((4, 2), float("nan")), objective="exact", n_iter=1)
    with pytest.raises(ValueError, match="lr must be"):
        train_score(s, x, objective="exact", n_iter=1, lr=-1.0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_score(nn.Identity(), x, objective="exact", n_iter=1)


def test_losses_are_read_back_once_per_window_and_checked_in_order(monkeypatch):
    """train_score reads its losses from the device every 25 iterations, in one transfer, and a
    bad loss is still reported at its own iteration."""
    import coursekit.train as T

    reads = []
    original = T.read_losses

    def counted(pending, *args, **kwargs):
        reads.append([step for step, _ in pending])
        return original(pending, *args, **kwargs)

    monkeypatch.setattr("coursekit.score.train.read_losses", counted)
    torch.manual_seed(0)
    res = train_score(ScoreMLP(2, hidden=8), torch.randn(64, 2), objective="dsm", sigma=0.5, n_iter=60, batch_size=8)
    assert [r[0] for r in reads] == [0, 1, 26, 51] and reads[-1][-1] == 59
    assert len(res.loss) == 60 and all(math.isfinite(v) for v in res.loss)

    class LateNaN(ScoreMLP):
        calls = 0

        def forward(self, x, *args):
            LateNaN.calls += 1
            out = super().forward(x, *args)
            return out * float("nan") if LateNaN.calls == 31 else out

    with pytest.raises(TrainingDiverged, match="step 30: the dsm score matching loss is nan"):
        train_score(LateNaN(2, hidden=8), torch.randn(64, 2), objective="dsm", sigma=0.5, n_iter=60, batch_size=8)
