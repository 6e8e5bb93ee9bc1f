"""coursekit.ebm.train: the replay buffer, the contrastive loss (line 14 of Algorithm 1), and
Algorithm 1 recovering the maximum-likelihood fit of a Gaussian energy; divergence detection."""

import math

import pytest
import torch
from torch import nn

from coursekit.ebm import Energy, MLPEnergy, ReplayBuffer, contrastive_loss, train_ebm
from coursekit.train import TrainingDiverged


class LearnableGaussian(Energy):
    """U(x) = (x - m)^2 / (2 exp(2 log_s)) in 1-D: Algorithm 1 should find the MLE (mean, std)."""

    def __init__(self):
        super().__init__((1,))
        self.m = nn.Parameter(torch.zeros(()))
        self.log_s = nn.Parameter(torch.zeros(()))

    def _energy(self, x):
        return ((x[:, 0] - self.m) ** 2) / (2 * torch.exp(2 * self.log_s))


def test_replay_buffer_capacity_and_restarts():
    B = ReplayBuffer()
    like = torch.zeros(5, 2)
    assert len(B) == 0 and B.sample(5, 0.0, like=like).shape == (5, 2)
    B.push(torch.ones(4, 2))
    B.push(2 * torch.ones(3, 2))  # capacity None: B = the last batch (line 15)
    assert len(B) == 3 and torch.all(B.sample(100, 0.0) == 2)
    fifo = ReplayBuffer(capacity=5)
    fifo.push(torch.ones(4, 2))
    fifo.push(2 * torch.ones(3, 2))
    assert len(fifo) == 5 and (fifo.samples[:, 0] == 1).sum() == 2
    g = torch.Generator().manual_seed(0)
    x = B.sample(10_000, 0.3, generator=g)
    restarted = (x[:, 0] != 2).float().mean().item()
    assert abs(restarted - 0.3) < 0.03  # binomial std 0.005
    assert torch.all(x[x[:, 0] != 2][:, 0] == x[x[:, 0] != 2][:, 0])  # rows restart whole
    with pytest.raises(ValueError, match="alpha"):
        B.sample(3, 1.5)
    with pytest.raises(ValueError, match="like="):
        ReplayBuffer().sample(3, 0.5)
    assert "size=3" in repr(B)
    # after a divergence: the samples with a NaN or inf entry go, the others stay in order
    bad = torch.arange(12.0).view(6, 2)
    bad[1, 0], bad[4, 1] = float("nan"), float("inf")
    fifo = ReplayBuffer(capacity=10)
    fifo.push(bad)
    assert fifo.drop_nonfinite() == 2 and torch.equal(fifo.samples, bad[[0, 2, 3, 5]])
    assert fifo.drop_nonfinite() == 0 and len(fifo) == 4
    fifo.push(torch.full((3, 2), float("nan")))
    assert fifo.drop_nonfinite() == 3 and len(fifo) == 4
    all_bad = ReplayBuffer()
    all_bad.push(torch.full((3, 2), float("nan")))
    assert all_bad.drop_nonfinite() == 3 and len(all_bad) == 0 and ReplayBuffer().drop_nonfinite() == 0
    assert all_bad.sample(4, 0.0, like=like).isfinite().all()  # empty again: fresh N(0, I) starts
    scalars = ReplayBuffer()  # samples that are single numbers
    scalars.push(torch.tensor([1.0, float("nan"), 2.0]))
    assert scalars.drop_nonfinite() == 1 and scalars.samples.tolist() == [1.0, 2.0]


def test_contrastive_gradient_is_line_14():
    # linear energy U(x) = <w, x>: grad_w L = mean x+ - mean x-, and the regulariser adds
    # reg * grad mean(U+^2 + U-^2) = reg * 2 mean(U+ x+ + ... )
    w = nn.Parameter(torch.randn(3, dtype=torch.float64))
    U = lambda x: x @ w  # noqa: E731
    xp, xn = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    loss, stats = contrastive_loss(U, xp, xn, reg=0.0)
    (g,) = torch.autograd.grad(loss, w)
    torch.testing.assert_close(g, xp.mean(0) - xn.mean(0))
    loss, _ = contrastive_loss(U, xp, xn, reg=0.3)
    (g,) = torch.autograd.grad(loss, w)
    reg_grad = 0.3 * 2 * ((xp @ w)[:, None] * xp + (xn @ w)[:, None] * xn).mean(0)
    torch.testing.assert_close(g, xp.mean(0) - xn.mean(0) + reg_grad.detach())
    torch.testing.assert_close(stats["e_pos"], (xp @ w).mean().detach())
    with pytest.raises(ValueError, match="reg"):
        contrastive_loss(U, xp, xn, reg=-1)


@pytest.mark.parametrize("chains", ["replay", "persistent", "short-run"])
def test_algorithm_1_recovers_the_gaussian_mle(chains):
    torch.manual_seed(0)
    data = 2.0 + 0.5 * torch.randn(4000, 1)
    U = LearnableGaussian()
    gamma = 0.02
    # short-run chains from N(0, 1) need time to reach N(2, 0.25): K * gamma ~ 3 relaxation times
    K = 120 if chains == "short-run" else 10
    train_ebm(U, data, n_iter=250, batch_size=256, n_steps=K, gamma=gamma, alpha=0.05, chains=chains,
              reg=0.0, optimizer=torch.optim.Adam(U.parameters(), lr=0.03), generator=torch.Generator().manual_seed(0))
    mean, std = data.mean().item(), data.std().item()
    # at equilibrium the *sampler's* law N(m, s^2 / (1 - gamma / (2 s^2))) matches the data, so ULA's
    # bias makes the fitted s^2 = std^2 - gamma / 2: s = 0.49 instead of 0.5, inside the tolerance
    assert abs(U.m.item() - mean) < 0.06
    assert abs(math.exp(U.log_s.item()) - std) < 0.06


def test_training_result_and_history():
    torch.manual_seed(0)
    U = MLPEnergy(2, hidden=16)
    res = train_ebm(U, torch.randn(100, 2), n_iter=5, batch_size=16, n_steps=3, gamma=0.01, buffer_size=32)
    assert len(res.loss) == len(res.e_pos) == len(res.e_neg) == 5
    assert res.negatives.shape == (16, 2) and len(res.buffer) == 32
    assert "5 iterations" in repr(res)


def test_divergence_is_detected_with_advice():
    torch.manual_seed(0)
    U = LearnableGaussian()
    with pytest.raises(TrainingDiverged, match="Lower the ULA step gamma"):
        train_ebm(U, torch.randn(100, 1) * 0.01, n_iter=50, batch_size=16, n_steps=50, gamma=50.0, reg=0.0, lr=0.5)
    with pytest.raises(TrainingDiverged, match="beyond the limit"):
        train_ebm(MLPEnergy(2, hidden=8), 100 * torch.randn(50, 2), n_iter=3, batch_size=8, n_steps=1,
                  gamma=1e-4, max_energy=1e-6)


def test_bad_settings_are_rejected():
    U = MLPEnergy(2, hidden=8)
    with pytest.raises(ValueError, match="chains="):
        train_ebm(U, torch.randn(10, 2), n_iter=1, chains="forever")
    with pytest.raises(ValueError, match="NaN"):
        train_ebm(U, torch.full((10, 2), float("nan")), n_iter=1)
    with pytest.raises(ValueError, match="n_iter"):
        train_ebm(U, torch.randn(10, 2), n_iter=0)


def test_custom_sampler_is_used():
    from coursekit.ebm import decoupled_langevin

    calls = []

    def sampler(U, x0, K):
        calls.append(K)
        return decoupled_langevin(U, x0, 0.01, 0.01, K)

    res = train_ebm(MLPEnergy(2, hidden=8), torch.randn(50, 2), n_iter=4, batch_size=8, n_steps=3, sampler=sampler)
    assert calls == [3] * 4 and len(res.loss) == 4


def test_after_step_runs_after_every_optimiser_step():
    calls = []
    U = MLPEnergy(2, hidden=8, depth=1)
    train_ebm(U, torch.randn(64, 2), n_iter=7, batch_size=8, n_steps=2, gamma=0.1,
              after_step=lambda: calls.append(next(U.parameters()).detach().clone()))
    assert len(calls) == 7
    assert not torch.equal(calls[0], calls[-1])  # it saw the parameters after the steps


def test_training_reads_the_device_once_per_window(monkeypatch, host_reads):
    """Algorithm 1's loop keeps each iteration's loss and mean energies on the device and reads
    them back together every 25 iterations (with the guard's parameter check): a few reads per
    window, not several per iteration (each is a host synchronisation on a GPU). The history is
    still complete and in order."""
    torch.manual_seed(0)
    U = MLPEnergy(2, hidden=8)
    n_iter = 100
    reads = host_reads(monkeypatch)
    res = train_ebm(U, torch.randn(128, 2), n_iter=n_iter, batch_size=16, n_steps=5, gamma=0.01, reg=0.0)
    count = reads.count
    monkeypatch.undo()
    assert len(res.loss) == len(res.e_pos) == len(res.e_neg) == n_iter
    assert all(math.isfinite(v) for v in res.loss + res.e_pos + res.e_neg)
    # the logged values are the iterations' own: the loss is U(X+) - U(X-) (reg = 0 here)
    assert all(abs(v - (p - n)) < 1e-5 * (1 + abs(p) + abs(n)) for v, p, n in zip(res.loss, res.e_pos, res.e_neg))
    windows = n_iter // 25 + 1
    assert count <= 2 * windows + 12, count  # against about 7 per iteration before


def test_a_chain_that_diverges_between_reads_is_reported_at_its_iteration():
    """The chains are no longer scanned for NaN at every iteration: a chain that leaves the finite
    numbers at iteration 40 is reported at iteration 40 (when the window is read), with the
    advice, and the energy is back at its last checked parameters (iteration 25)."""
    torch.manual_seed(0)
    U, states = MLPEnergy(2, hidden=8), []

    def sampler(energy, x0, k):
        states.append({n: t.detach().clone() for n, t in energy.state_dict().items()})
        return x0 * float("nan") if len(states) - 1 == 40 else x0

    with pytest.raises(TrainingDiverged, match=r"step 40: the mean sample energy U\(X-\).* is nan.*Lower the ULA") as info:
        train_ebm(U, torch.randn(64, 2), n_iter=100, batch_size=8, n_steps=1, sampler=sampler)
    res = info.value.history
    assert res.stopped_at == 40 and res.restored_step == 25 and not U.training
    assert all(torch.equal(t, states[25][n]) for n, t in U.state_dict().items())
    assert len(res.loss) == 40 and all(math.isfinite(v) for v in res.loss)  # iterations 0..39, checked
    # the replay buffer took the NaN chains of iterations 40.. until the read at 50: it is left with
    # its finite samples only, ready to start the chains of a resumed run
    # capacity None: the last batch, NaN but for the few chains restarted from N(0, I)
    assert res.buffer is not None and len(res.buffer) < 8 and (len(res.buffer) == 0 or res.buffer.samples.isfinite().all())
    # the last negatives likewise (the chains of iteration 49, NaN but for the restarted ones)
    assert res.negatives.shape[1:] == (2,) and res.negatives.shape[0] < 8 and res.negatives.isfinite().all()
    torch.manual_seed(0)
    U, states = MLPEnergy(2, hidden=8), []
    with pytest.raises(TrainingDiverged, match="step 40") as info:
        train_ebm(U, torch.randn(64, 2), n_iter=100, batch_size=8, n_steps=1, sampler=sampler, buffer_size=200)
    kept = info.value.history.buffer
    assert 0 < len(kept) < 200 and kept.samples.isfinite().all()
    # ULA itself, unscanned inside the loop: a step far too large for this energy gives inf/NaN
    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"U\(X-\).*(nan|inf).*Lower the ULA step gamma"):
        train_ebm(MLPEnergy(2, hidden=8), torch.randn(64, 2), n_iter=60, batch_size=8, n_steps=200, gamma=1e6,
                  reg=0.0)
