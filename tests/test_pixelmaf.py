"""PixelMAF: a MAF layer on images with a Gated PixelCNN conditioner (the generic suite checks its triangular
Jacobian and log-dets against autograd; here the two directions and the conditioner's role)."""

from __future__ import annotations

import pytest
import torch

from coursekit.flows import PixelMAF

F64 = torch.float64


@pytest.mark.parametrize("channels", [1, 2])
def test_pixel_maf_round_trip_and_log_det(channels):
    """Density direction in one pass, sampling direction in C*H*W sweeps: they are inverse maps, with
    log-dets -sum(alpha) and +sum(alpha)."""
    torch.manual_seed(6)
    layer = PixelMAF(channels, spatial=(4, 4), features=8, n_layers=2, zero_init=False).double()
    x = torch.randn(5, channels, 4, 4, dtype=F64)
    with torch.no_grad():
        z, ld_inv = layer.inverse(x)
        x_back, ld = layer(z)
        m, alpha = layer.conditioner(x)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(ld_inv, -alpha.reshape(5, -1).sum(1)) and torch.allclose(ld, -ld_inv, atol=1e-10)
    assert alpha.abs().max() > 1e-3  # the layer is not the identity
    assert torch.allclose(z, (x - m) * torch.exp(-alpha))


def test_pixel_maf_starts_as_the_identity_and_needs_whole_features():
    layer = PixelMAF(3, spatial=(2, 2), features=8)
    x = torch.randn(2, 3, 2, 2)
    z, ld = layer.inverse(x)
    assert torch.equal(z, x) and torch.equal(ld, torch.zeros(2))
    assert layer.net.features == 9  # rounded up to a multiple of the 3 channels
