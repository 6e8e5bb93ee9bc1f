"""Training runs fail safe: after a divergence, an error in the user's callback or Ctrl-C (a
real SIGINT, in a subprocess), every trainer leaves its model at the best state it checked, in
eval mode, with the history saying where it stopped (``coursekit.train.TrainingGuard``).

Each test records the model's parameters at every step from inside a callback, so that the
restored parameters can be compared with those of the step the history names.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from coursekit.data import log_target
from coursekit.distill import distill
from coursekit.ebm import MLPEnergy, fit_maxent, train_ebm
from coursekit.flows import Compose, Flow, Planar, iaf_flow, maf_flow, make_realnvp
from coursekit.train import TrainingDiverged, TrainingGuard, fit_mle, fit_reverse_kl


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def _planar(k=4):
    torch.manual_seed(0)
    return Flow(Compose(*[Planar(2) for _ in range(k)]))


class Boom(RuntimeError):
    pass


# ----------------------------------------------------------------------------- divergence


def test_fit_mle_stops_a_diverging_realnvp_and_restores_a_usable_flow():
    """lr = 100 used to return normally with an NLL of 8e24."""
    torch.manual_seed(0)
    flow = Flow(make_realnvp(2, n_layers=4, hidden=(32,)))
    data = torch.randn(512, 2) * torch.tensor([1.0, 0.3])
    with torch.no_grad():
        start = float(-flow.log_prob(data).mean())
    with pytest.raises(TrainingDiverged, match="Lower the learning rate") as info:
        fit_mle(flow, data, steps=300, lr=100.0, seed=0)
    h = info.value.history
    assert h.stopped_at is not None and h.restored_step is not None and h.restored_step <= h.stopped_at
    assert not flow.training
    assert all(bool(torch.isfinite(p).all()) for p in flow.parameters())
    with torch.no_grad():
        after = float(-flow.log_prob(data).mean())
    assert math.isfinite(after) and after < start + 10 * max(1.0, abs(start)), (start, after)


def test_fit_reverse_kl_stops_a_diverging_planar_flow():
    """lr = 1e4 used to return a loss of 3.5e10."""
    flow = _planar()
    with pytest.raises(TrainingDiverged) as info:
        fit_reverse_kl(flow, log_target("U1"), steps=300, n_samples=64, lr=1e4)
    assert not flow.training and info.value.history.restored_step is not None
    with torch.no_grad():
        x, lq = flow.sample_and_log_prob(256)
    assert bool(torch.isfinite(x).all()) and bool(torch.isfinite(lq).all())


def test_distill_reports_divergence_as_training_diverged_and_unfreezes_the_teacher():
    torch.manual_seed(0)
    teacher, student = maf_flow(2, 1, hidden=(8,)), iaf_flow(2, 1, hidden=(8,))
    with pytest.raises(TrainingDiverged) as info:
        distill(student, teacher, steps=300, batch_size=64, lr=1e4, max_grad_norm=None, cosine=False)
    assert all(p.requires_grad for p in teacher.parameters())
    assert not student.training and info.value.history.stopped_at is not None
    assert all(bool(torch.isfinite(p).all()) for p in student.parameters())


def test_train_ebm_stops_exploding_energies_and_restores_finite_parameters():
    torch.manual_seed(0)
    U = MLPEnergy(2, hidden=16)
    data = torch.randn(256, 2)
    with pytest.raises(TrainingDiverged) as info:
        train_ebm(U, data, n_iter=300, batch_size=32, n_steps=5, gamma=0.01, reg=0.0, lr=10.0, max_energy=1e3)
    res = info.value.history
    assert res.stopped_at is not None and res.restored_step is not None and not U.training
    assert all(bool(torch.isfinite(p).all()) for p in U.parameters())
    assert bool(torch.isfinite(U(data)).all())


def test_fit_maxent_with_negative_curvature_stops_and_keeps_a_proper_start():
    """Without the projection (min_curvature=None) a large step makes the model improper (a
    negative Hessian eigenvalue): the chains run away and training stops, back at a checked theta."""
    torch.manual_seed(0)
    x0 = torch.randn(12, 12)
    with pytest.raises(TrainingDiverged) as info:
        fit_maxent(x0, n_iter=200, n_chains=4, n_steps=5, gamma=0.05, lr=2.0, min_curvature=None)
    assert info.value.history.restored_step == 0  # the start, N(0, I), was the last checked state


def test_parameters_that_blow_up_are_caught_even_when_the_loss_looks_fine():
    flow = _planar(1)
    history = []
    with pytest.raises(TrainingDiverged, match="parameters blew up"):
        with TrainingGuard(flow, None, check_every=1) as run:
            for step in range(3):
                run.observe(step, 1.0)
                with torch.no_grad():
                    flow.transform[0].u.mul_(1e6)
    assert torch.allclose(flow.transform[0].u, _planar(1).transform[0].u)  # restored
    assert history == []


def test_the_rule_ignores_noise_and_annealing():
    """A noisy loss that does not rise, and an annealed reverse KL, run to the end."""
    flow = _planar(2)
    rng = torch.Generator().manual_seed(0)
    with TrainingGuard(flow, None, check_every=5) as run:
        for step in range(200):
            run.observe(step, 3.0 + float(torch.randn((), generator=rng)) * 2.0)
        run.finish()
    hist = fit_reverse_kl(_planar(), log_target("U2"), steps=60, n_samples=64, lr=1e-2, anneal=40)
    assert len(hist) == 60 and hist.stopped_at is None


# ----------------------------------------------------------------------------- callback errors


def _recording_transform(flow, states, fail_at):
    def transform(x):
        states.append(_state(flow))  # the parameters of this step, before its update
        if len(states) - 1 == fail_at:
            raise Boom("the user's transform failed")
        return x

    return transform


@pytest.mark.parametrize("val", [False, True])
def test_fit_mle_restores_after_an_error_in_transform(val):
    flow, states = _planar(), []
    data = torch.randn(256, 2) + 1
    kwargs = dict(val_data=torch.randn(64, 2) + 1, val_every=10) if val else {}
    with pytest.raises(Boom) as info:
        fit_mle(flow, data, steps=200, batch_size=32, lr=1e-2, seed=0,
                transform=_recording_transform(flow, states, fail_at=57 + val), **kwargs)
    h = info.value.history  # with val_data the transform also ran once on it, before training
    assert h.stopped_at == 57 and "Boom" in h.stop_reason and not flow.training
    if val:
        assert h.restored_step == h.best_step
        with torch.no_grad():
            kept = float(-flow.log_prob(kwargs["val_data"]).mean())
        assert kept == pytest.approx(min(v for _, v in h.val), rel=1e-5)
    else:
        assert h.restored_step == 50  # the last checkpoint (every 25 steps)
        assert _same(flow, states[50])


def test_fit_reverse_kl_restores_after_an_error_in_log_target():
    flow, states = _planar(), []
    lt = log_target("U1")

    def target(x):
        states.append(_state(flow))
        if len(states) == 40:
            raise Boom("target failed")
        return lt(x)

    with pytest.raises(Boom) as info:
        fit_reverse_kl(flow, target, steps=100, n_samples=32, lr=1e-2)
    assert info.value.history.restored_step == 25 and _same(flow, states[25]) and not flow.training


def test_distill_restores_after_an_error_in_the_teacher():
    torch.manual_seed(0)
    teacher, student = maf_flow(2, 1, hidden=(8,)), iaf_flow(2, 1, hidden=(8,))
    states, inner = [], teacher.log_prob

    def log_prob(x):
        states.append(_state(student))
        if len(states) == 30:
            raise Boom("teacher failed")
        return inner(x)

    teacher.log_prob = log_prob
    with pytest.raises(Boom) as info:
        distill(student, teacher, steps=100, batch_size=32, lr=1e-2)
    assert info.value.history.restored_step == 25 and _same(student, states[25])
    assert all(p.requires_grad for p in teacher.parameters())


def test_train_ebm_restores_after_an_error_in_after_step():
    torch.manual_seed(0)
    U, states = MLPEnergy(2, hidden=8), []

    def after_step():
        if len(states) == 33:
            raise Boom("projection failed")

    def sampler(energy, x0, k):
        states.append(_state(U))
        return x0

    with pytest.raises(Boom) as info:
        train_ebm(U, torch.randn(64, 2), n_iter=100, batch_size=8, n_steps=1, sampler=sampler, after_step=after_step)
    res = info.value.history
    assert res.stopped_at == 32 and res.restored_step == 25 and _same(U, states[25]) and not U.training


# ----------------------------------------------------------------------------- Ctrl-C

CHILD = r"""
import json, signal, sys, torch
# a job started in the background (nohup, `&`) inherits SIGINT ignored, and Python then installs
# no KeyboardInterrupt handler: put it back, so that the test does not depend on how it was run
signal.signal(signal.SIGINT, signal.default_int_handler)
from coursekit.data import log_target
from coursekit.distill import distill
from coursekit.ebm import MLPEnergy, train_ebm
from coursekit.flows import Compose, Flow, Planar, iaf_flow, maf_flow
from coursekit.train import fit_mle, fit_reverse_kl

which = sys.argv[1]
torch.manual_seed(0)
states = []

def record(model):
    states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    if len(states) == 60:
        print("ready", flush=True)  # the parent sends SIGINT now

try:
    if which == "fit_mle":
        model = Flow(Compose(*[Planar(2) for _ in range(3)]))
        out = fit_mle(model, torch.randn(256, 2), steps=10**6, batch_size=16,
                      transform=lambda x: (record(model), x)[1])
    elif which == "fit_reverse_kl":
        model = Flow(Compose(*[Planar(2) for _ in range(3)]))
        lt = log_target("U1")
        out = fit_reverse_kl(model, lambda x: (record(model), lt(x))[1], steps=10**6, n_samples=16)
    elif which == "distill":
        teacher, model = maf_flow(2, 1, hidden=(8,)), iaf_flow(2, 1, hidden=(8,))
        inner = teacher.log_prob
        teacher.log_prob = lambda x: (record(model), inner(x))[1]
        out = distill(model, teacher, steps=10**6, batch_size=16)
    else:
        model = MLPEnergy(2, hidden=8)
        out = train_ebm(model, torch.randn(64, 2), n_iter=10**6, batch_size=8, n_steps=1,
                        sampler=lambda U, x0, k: (record(model), x0)[1])
    print(json.dumps({"error": "training ended without an interrupt"}))
except KeyboardInterrupt as err:
    h = err.history
    kept = states[h.restored_step]
    same = all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())
    extra = {}
    if which == "distill":
        extra["teacher_grad"] = all(p.requires_grad for p in teacher.parameters())
    print(json.dumps(dict(stopped_at=h.stopped_at, restored=h.restored_step, same=same, training=model.training,
                          reason=h.stop_reason, n_states=len(states), **extra)))
"""


@pytest.mark.parametrize("which", ["fit_mle", "fit_reverse_kl", "distill", "train_ebm"])
def test_ctrl_c_leaves_the_model_at_its_last_checked_state(which, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = dict(os.environ, OMP_NUM_THREADS="1", COURSEKIT_PROGRESS="0")
    proc = subprocess.Popen([sys.executable, str(script), which], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
        assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["reason"] == "interrupted (KeyboardInterrupt)"
    assert result["restored"] <= result["stopped_at"] and result["restored"] % 25 == 0
    assert result["same"] and not result["training"]
    if which == "distill":
        assert result["teacher_grad"]
