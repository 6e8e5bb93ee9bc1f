"""Plotting helpers draw what they are given, and refuse what they cannot draw."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from coursekit.plotting import grid_points, plot_deformed_grid, plot_density, plot_samples, show_images  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_show_images_tiles_the_batch_in_order():
    images = torch.arange(6, dtype=torch.float32)[:, None].repeat(1, 64)  # image k is constant k
    ax = show_images(images, nrow=3, title="digits")
    grid = ax.get_images()[0].get_array()
    assert grid.shape == (2 * 8 + 1, 3 * 8 + 2)  # 2 rows and 3 columns of 8x8, with 1-pixel gaps
    assert grid[0, 0] == 0 and grid[0, 9] == 1 and grid[9, 18] == 5
    assert np.ma.is_masked(grid[8, 0]) or np.isnan(grid[8, 0])  # the gap is blank, not a pixel
    assert ax.get_title() == "digits"


def test_show_images_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        show_images(torch.zeros(4, 10))


def test_grid_points_cover_the_box_and_integrate_a_density():
    pts, xs, ys, area = grid_points(lim=6.0, n=300, dtype=torch.float64)
    assert pts.shape == (300 * 300, 2) and xs.min() > -6 and xs.max() < 6
    gauss = torch.exp(-0.5 * (pts**2).sum(1)) / (2 * torch.pi)
    assert abs(float(gauss.sum() * area) - 1.0) < 1e-6
    with pytest.raises(ValueError, match="non-empty box"):
        grid_points(lim=(1.0, 0.0, 0.0, 1.0))


def test_plot_density_shows_the_density_values():
    ax = plot_density(lambda x: -0.5 * (x**2).sum(1) - np.log(2 * np.pi), lim=3.0, n=50, title="N(0, I)")
    img = np.asarray(ax.get_images()[0].get_array())
    assert img.shape == (50, 50)
    assert img.max() == pytest.approx(1 / (2 * np.pi), rel=0.05)  # peak of the standard Gaussian
    assert np.unravel_index(img.argmax(), img.shape) in {(24, 24), (24, 25), (25, 24), (25, 25)}


def test_plot_samples_and_deformed_grid_draw_their_points():
    x = torch.randn(100, 2)
    ax = plot_samples(x, title="samples")
    offsets = ax.collections[0].get_offsets()
    assert np.allclose(np.asarray(offsets), x.numpy())
    ax = plot_deformed_grid(lambda z: 2 * z, lim=1.0, n_lines=5, n_points=10, title="doubling")
    xy = np.concatenate([line.get_xydata() for line in ax.get_lines()])
    assert np.isclose(np.abs(xy).max(), 2.0)  # the grid [-1, 1]^2 is stretched to [-2, 2]^2
