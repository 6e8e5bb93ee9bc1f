"""fit_mle and fit_reverse_kl: they learn, return their loss history, move data to the flow's
device and dtype, and stop with a clear message on bad input or divergence."""

import math

import pytest
import torch

from coursekit.data import log_normalizer, log_target, sample_toy
from coursekit.flows import Compose, Flow, Planar, uniform_dequantize
from coursekit.train import TrainingDiverged, fit_mle, fit_reverse_kl, guard


def _flow(k=4, dim=2):
    torch.manual_seed(0)
    return Flow(Compose(*[Planar(dim) for _ in range(k)]))


def test_fit_mle_learns_and_returns_history():
    data = torch.randn(1000, 2) * torch.tensor([0.5, 1.5]) + torch.tensor([1.0, -0.5])
    flow = _flow()
    with torch.no_grad():
        before = float(-flow.log_prob(data).mean())
    hist = fit_mle(flow, data, steps=200, batch_size=128, lr=2e-2, seed=0)
    with torch.no_grad():
        after = float(-flow.log_prob(data).mean())
    assert len(hist) == 200 and all(math.isfinite(h) for h in hist)
    assert after < before - 0.2, (before, after)
    assert not flow.training  # left in eval mode


def test_fit_mle_is_reproducible_with_a_seed():
    data = sample_toy("8gaussians", 500, seed=0)
    h1 = fit_mle(_flow(), data, steps=5, seed=3)
    h2 = fit_mle(_flow(), data, steps=5, seed=3)
    assert h1 == h2


def test_fit_mle_moves_data_to_the_flow_dtype():
    flow = _flow().double()
    hist = fit_mle(flow, torch.randn(300, 2), steps=3, seed=0)  # float32 data, float64 flow
    assert len(hist) == 3 and flow.transform[0].w.dtype == torch.float64


def test_fit_mle_rejects_bad_data_and_settings():
    flow = _flow()
    with pytest.raises(ValueError, match=r"expected \(N, 2\)"):
        fit_mle(flow, torch.randn(10, 3), steps=1)
    bad = torch.randn(10, 2)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_mle(flow, bad, steps=1)
    with pytest.raises(ValueError, match="steps"):
        fit_mle(flow, torch.randn(10, 2), steps=0)
    with pytest.raises(ValueError, match="lr"):
        fit_mle(flow, torch.randn(10, 2), steps=1, lr=-1.0)
    with pytest.raises(TypeError):
        fit_mle(flow, [[0.0, 1.0]], steps=1)


def test_fit_mle_divergence_stops_with_advice():
    # unstandardised data at scale 1e20: the Gaussian base log-density overflows float32
    flow = _flow()
    data = torch.randn(200, 2) * 1e20
    with pytest.raises(TrainingDiverged, match="step 0: the negative log-likelihood is inf.*standardise the data"):
        fit_mle(flow, data, steps=5, seed=0)


def test_fit_reverse_kl_reduces_the_kl_to_U1():
    flow = _flow(k=8)
    lt = log_target("U1")
    log_z = log_normalizer("U1")
    hist = fit_reverse_kl(flow, lt, steps=300, n_samples=256, lr=1e-2)
    assert len(hist) == 300
    # loss + log Z is a Monte Carlo estimate of KL(p_theta || pi) >= 0
    torch.manual_seed(1)
    with torch.no_grad():
        x, lq = flow.sample_and_log_prob(20_000)
        kl = float((lq - lt(x)).mean()) + log_z
    assert -0.02 < kl < 0.7 * (hist[0] + log_z), (kl, hist[0] + log_z)


def test_fit_reverse_kl_guards_nan_targets_and_bad_shapes():
    flow = _flow()
    with pytest.raises(TrainingDiverged, match="log_target is finite"):
        fit_reverse_kl(flow, lambda x: x[:, 0] * float("nan"), steps=3)
    with pytest.raises(ValueError, match="one value per sample"):
        fit_reverse_kl(flow, lambda x: x, steps=1)
    with pytest.raises(TypeError):
        fit_reverse_kl(flow, "U1", steps=1)
    with pytest.raises(ValueError, match="anneal"):
        fit_reverse_kl(flow, log_target("U1"), steps=1, anneal=-1)


def test_fit_reverse_kl_anneals():
    hist = fit_reverse_kl(_flow(), log_target("U2"), steps=20, n_samples=64, anneal=10)
    assert len(hist) == 20


def test_guard_message():
    with pytest.raises(TrainingDiverged, match="step 7: the loss is nan. do this"):
        guard(torch.tensor(float("nan")), 7, advice="do this")
    assert guard(torch.tensor(1.5), 0) == 1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fit_mle_moves_cpu_data_to_a_gpu_flow():
    flow = _flow().cuda()
    hist = fit_mle(flow, torch.randn(300, 2), steps=3, seed=0)
    assert len(hist) == 3


def test_fit_mle_transform_sees_every_batch_fresh():
    """``transform`` runs once per step on that step's batch (fresh dequantisation noise each time)."""
    seen = []

    def dequantize(k):
        seen.append(k.clone())
        return uniform_dequantize(k, 4)

    k = torch.randint(0, 4, (64, 2)).float()
    hist = fit_mle(_flow(), k, steps=7, batch_size=16, seed=0, transform=dequantize)
    assert len(hist) == 7 and len(seen) == 7
    assert all(b.shape == (16, 2) for b in seen)
    assert all(bool(((b == b.round()) & (b >= 0) & (b <= 3)).all()) for b in seen)  # the integers, before the noise


def test_fit_mle_keeps_the_parameters_with_the_best_validation_nll():
    """Training data far from the validation data: the validation NLL rises as the flow learns,
    so early stopping must restore an early state, not the last one."""
    torch.manual_seed(0)
    flow = _flow()
    train = torch.randn(512, 2) * 0.1 + 3.0
    val = torch.randn(256, 2)
    hist = fit_mle(flow, train, steps=60, batch_size=64, lr=2e-2, seed=0, val_data=val, val_every=10)
    steps, values = zip(*hist.val)
    assert steps == (10, 20, 30, 40, 50, 60)
    assert hist.best_step == steps[values.index(min(values))]
    assert min(values) < values[-1] - 0.5  # the validation NLL really did rise
    with torch.no_grad():
        restored = -flow.log_prob(val).mean().item()
    assert restored == pytest.approx(min(values), rel=1e-6)
    assert hist.best_step < 60


def test_fit_mle_records_a_last_validation_pass_and_nothing_without_val_data():
    hist = fit_mle(_flow(), torch.randn(100, 2), steps=25, seed=0, val_data=torch.randn(50, 2), val_every=10)
    assert [s for s, _ in hist.val] == [10, 20, 25]
    plain = fit_mle(_flow(), torch.randn(100, 2), steps=5, seed=0)
    assert plain.val == [] and plain.best_step is None


def test_fit_mle_rejects_bad_transform_and_validation_settings():
    flow, data = _flow(), torch.randn(20, 2)
    with pytest.raises(ValueError, match="val_every must be a positive integer"):
        fit_mle(flow, data, steps=1, val_data=data, val_every=0)
    with pytest.raises(TypeError, match="transform must be a function"):
        fit_mle(flow, data, steps=1, transform=3)
    with pytest.raises(ValueError, match=r"transform must return a tensor of the batch's shape \(8, 2\), got \(8, 1\)"):
        fit_mle(flow, data, steps=1, batch_size=8, transform=lambda x: x[:, :1])
    with pytest.raises(ValueError, match=r"val_data has shape \(5, 3\), expected \(N, 2\)"):
        fit_mle(flow, data, steps=1, val_data=torch.randn(5, 3))
    with pytest.raises(ValueError, match="val_data contains NaN"):
        fit_mle(flow, data, steps=1, val_data=torch.tensor([[0.0, float("nan")]]))


# ----------------------------------------------------------------------------- host synchronisation


@pytest.mark.parametrize("model", ["realnvp", "maf"])
def test_training_loops_read_the_device_once_per_checkpoint(model, monkeypatch, host_reads):
    """fit_mle, fit_reverse_kl and distill read losses and checks back once per 25 steps (the
    guard's checkpoints), not at every step: the data are checked once, the batches are not
    rescanned for NaN, and the losses stay on the device until a checkpoint. (A planar flow's
    density needs a root-find, which reads its stopping test back: see test_planar.py.)"""
    from coursekit.distill import distill
    from coursekit.flows import iaf_flow, maf_flow, make_realnvp

    torch.manual_seed(0)
    build = {"realnvp": lambda: Flow(make_realnvp(2, n_layers=2, hidden=(16,))),
             "maf": lambda: maf_flow(2, 2, hidden=(16,))}[model]
    data = sample_toy("moons", 256, seed=0)
    steps = 100
    runs = {
        "fit_mle": lambda: fit_mle(build(), data, steps=steps, batch_size=32, seed=0),
        "fit_mle + transform": lambda: fit_mle(build(), data, steps=steps, batch_size=32, seed=0,
                                               transform=lambda x: x + 0.01 * torch.randn_like(x)),
        "fit_reverse_kl": lambda: fit_reverse_kl(build(), log_target("U1"), steps=steps, n_samples=32),
    }
    if model == "maf":
        runs["distill"] = lambda: distill(iaf_flow(2, 2, hidden=(16,)), build(), steps=steps, batch_size=32)
    for name, run in runs.items():
        reads = host_reads(monkeypatch)
        hist = run()
        assert len(hist) == steps and all(math.isfinite(v) for v in hist), name
        checkpoints = steps // 25 + 1
        # per checkpoint one read; a few more around the loop (argument and data checks, start, end)
        assert reads.count <= checkpoints + 12, (name, reads.count)
        monkeypatch.undo()


def test_deferred_checks_name_the_first_bad_step():
    """A NaN batch (a faulty transform) and a model that breaks between two checkpoints are both
    reported at the step where they happened, with the model restored to the last checkpoint."""
    data = torch.randn(256, 2)

    def poisoned(at, what):
        calls = []

        def transform(x):
            calls.append(None)
            if len(calls) - 1 == at:
                if what == "batch":
                    return x * float("nan")
                with torch.no_grad():
                    next(flow.parameters()).fill_(float("nan"))
            return x

        return transform

    from coursekit.flows import make_realnvp

    for what, error, message in [("batch", ValueError, "step 37: its batch contains NaN"),
                                 ("model", TrainingDiverged, "step 37: the negative log-likelihood is nan")]:
        torch.manual_seed(0)
        flow = Flow(make_realnvp(2, n_layers=2, hidden=(16,)))
        with pytest.raises(error, match=message) as info:
            fit_mle(flow, data, steps=200, batch_size=16, seed=0, transform=poisoned(37, what))
        assert "read back at step 50" in str(info.value)
        h = info.value.history
        assert h.stopped_at == 37 and h.restored_step == 25 and len(h) == 37
        assert all(bool(torch.isfinite(p).all()) for p in flow.parameters())
