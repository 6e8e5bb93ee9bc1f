"""coursekit.book.glue: numbers for the text, a no-op outside a notebook kernel."""

import numpy as np
import torch

from coursekit.book import _plain, glue


def test_values_become_plain_python_numbers():
    assert _plain(torch.tensor(0.25)) == 0.25 and type(_plain(torch.tensor(0.25))) is float
    assert type(_plain(np.float64(1.5))) is float and type(_plain(np.int64(3))) is int
    assert _plain(torch.tensor(7)) == 7 and type(_plain(torch.tensor(7))) is int
    assert _plain(2.0) == 2.0 and _plain("text") == "text"


def test_outside_a_kernel_it_does_nothing():
    assert glue("value", torch.tensor(1.0)) is None
