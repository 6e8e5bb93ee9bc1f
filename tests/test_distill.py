"""Probability density distillation: the KL estimate and the training loop."""

import math

import pytest
import torch

from coursekit.distill import distill, kl_estimate
from coursekit.flows import iaf_flow, maf_flow
from coursekit.train import TrainingDiverged


def _constant_gaussian(flow, shift, log_scale):
    """Zero every weight so that each layer's (m, alpha) is its output bias: a diagonal Gaussian."""
    with torch.no_grad():
        for p in flow.parameters():
            p.zero_()
        layer = flow.transform.maps[0]
        bias = layer.conditioner.made.net[-1].bias.view(2, -1)
        # the MAF's network outputs b = -m exp(-alpha) (shift after the scaling), the IAF's m
        bias[0] = -shift * torch.exp(-log_scale) if layer.conditioner.shift == "after" else shift
        # alpha = 5 tanh(a / 5): invert the soft clamp.
        bias[1] = 5 * torch.atanh(log_scale / 5)
    return flow


def test_kl_estimate_matches_closed_form_between_gaussians():
    torch.manual_seed(0)
    m_s, a_s = torch.tensor([0.5, -1.0]), torch.tensor([0.3, -0.2])
    m_t, a_t = torch.tensor([0.0, 0.5]), torch.tensor([-0.1, 0.4])
    student = _constant_gaussian(iaf_flow(2, 1, hidden=(4,)), m_s, a_s).double()
    teacher = _constant_gaussian(maf_flow(2, 1, hidden=(4,)), m_t, a_t).double()
    s = torch.distributions.Normal(m_s.double(), a_s.double().exp())
    t = torch.distributions.Normal(m_t.double(), a_t.double().exp())
    exact = float(torch.distributions.kl_divergence(s, t).sum())
    n = 200_000
    x, log_s = student.rsample_and_log_prob(n)
    log_ratio = (log_s - teacher.log_prob(x)).detach()
    se = float(log_ratio.std()) / math.sqrt(n)
    torch.manual_seed(1)
    with torch.no_grad():
        est = float(kl_estimate(student, teacher, n))
    assert abs(est - exact) < 4 * se, (est, exact, se)


def test_distillation_drives_the_kl_down_and_leaves_the_teacher_alone():
    torch.manual_seed(0)
    teacher = maf_flow(2, n_layers=2, hidden=(16,))
    with torch.no_grad():  # a non-Gaussian teacher: a random MAF far from the identity
        for p in teacher.parameters():
            p.normal_(0, 0.4)
    before = [p.clone() for p in teacher.parameters()]
    student = iaf_flow(2, n_layers=3, hidden=(32,))
    with torch.no_grad():
        start = float(kl_estimate(student, teacher, 20_000))
    history = distill(student, teacher, steps=400, batch_size=256, lr=3e-3)
    assert len(history) == 400 and all(math.isfinite(v) for v in history)
    with torch.no_grad():
        end = float(kl_estimate(student, teacher, 20_000))  # fresh samples, not the training ones
    assert start > 0.2 and end < 0.15 * start, (start, end)
    assert sum(history[-50:]) / 50 < 0.25 * sum(history[:50]) / 50
    for p, q in zip(teacher.parameters(), before):
        assert torch.equal(p, q) and p.requires_grad


def test_divergence_and_bad_settings_raise_clear_errors():
    teacher, student = maf_flow(2, 1, hidden=(4,)), iaf_flow(2, 1, hidden=(4,))
    with torch.no_grad():
        next(teacher.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="KL estimate"):
        distill(student, teacher, steps=3)
    with pytest.raises(ValueError, match="same space"):
        distill(iaf_flow(3, 1), maf_flow(2, 1))
    with pytest.raises(TypeError, match="must be a coursekit Flow"):
        distill(student, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="steps"):
        distill(student, maf_flow(2, 1), steps=0)
    with pytest.raises(ValueError, match="lr"):
        distill(student, maf_flow(2, 1), lr=-1.0)



@pytest.mark.parametrize("cosine", [True, False])
def test_learning_rate_schedule(monkeypatch, cosine):
    """cosine=True decays the rate from lr to 0 along a cosine; cosine=False keeps it constant."""
    import coursekit.distill as distill_module

    used = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, *args, **kwargs):
            used.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(distill_module.torch.optim, "Adam", RecordingAdam)
    torch.manual_seed(0)
    teacher, student = maf_flow(2, n_layers=1, hidden=(8,)), iaf_flow(2, n_layers=1, hidden=(8,))
    distill(student, teacher, steps=40, batch_size=32, lr=2e-3, cosine=cosine)
    assert len(used) == 40 and used[0] == pytest.approx(2e-3)
    if cosine:
        expected = [1e-3 * (1 + math.cos(math.pi * k / 40)) for k in range(40)]
        assert used == pytest.approx(expected, rel=1e-6)
    else:
        assert used == [2e-3] * 40
