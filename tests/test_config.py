"""The fast/full switch, the device choice and seeding."""

import numpy as np
import pytest
import torch

import coursekit
from coursekit import config


@pytest.mark.parametrize("value, expected", [("fast", "fast"), ("FULL", "full"), (" fast ", "fast")])
def test_mode_from_environment(monkeypatch, value, expected):
    monkeypatch.setenv(config.MODE_ENV, value)
    assert config.mode() == expected
    assert config.pick(fast=1, full=2) == (1 if expected == "fast" else 2)


def test_auto_mode_follows_cuda(monkeypatch):
    monkeypatch.delenv(config.MODE_ENV, raising=False)
    assert config.mode() == ("full" if torch.cuda.is_available() else "fast")


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(config.MODE_ENV, "quick")
    with pytest.raises(ValueError, match="expected one of fast, full, auto"):
        config.mode()


def test_device_override(monkeypatch):
    monkeypatch.setenv(config.DEVICE_ENV, "cpu")
    assert config.device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv(config.DEVICE_ENV, "cuda")
        with pytest.raises(RuntimeError, match="no GPU"):
            config.device()


def test_setup_seeds_everything(monkeypatch, capsys):
    monkeypatch.setenv(config.MODE_ENV, "fast")
    cfg = coursekit.setup(seed=3)
    a = (torch.randn(3), np.random.rand(3))
    coursekit.setup(seed=3, verbose=False)
    b = (torch.randn(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert cfg.mode == "fast" and cfg.pick(fast="s", full="l") == "s"
    assert "mode: fast" in capsys.readouterr().out
    with pytest.raises(ValueError, match="non-negative integer"):
        config.seed_everything(-1)
