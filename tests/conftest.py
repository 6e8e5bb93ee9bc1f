import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fixtures() -> Path:
    return ROOT / "tests" / "course" / "fixtures"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(params=[1, 3, None], ids=["block1", "block3", "block-default"])
def block(request, monkeypatch):
    """The in-place solver's block size (steps between the products that add on what became final,
    ``MADE.solve_block``): 1 (a product before every step), 3 (uneven blocks) and the default."""
    from coursekit.made import MADE

    if request.param is not None:
        monkeypatch.setattr(MADE, "solve_block", request.param)
    return MADE.solve_block


class HostReads:
    """Counts the reads of tensor values into Python (bool, float, int, item, tolist): on a GPU
    each is a synchronisation that stalls the pipeline. torch.optim's reads are not counted:
    they read the optimisers' step counters, which stay on the host (capturable=False)."""

    NAMES = ("__bool__", "__float__", "__int__", "item", "tolist")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(t, *args, _original=original, **kwargs):
                if "/torch/optim/" not in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                    self.count += 1
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.fixture
def host_reads():
    """``host_reads(monkeypatch)`` starts counting reads of tensor values into Python (see
    :class:`HostReads`); ``monkeypatch.undo()`` stops it."""
    return HostReads
