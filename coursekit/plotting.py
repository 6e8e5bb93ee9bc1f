"""Plotting helpers used across chapters (matplotlib only).

Each function draws on a given ``ax`` (or a new figure) and returns what it drew on, so that
notebooks can compose panels. Figures always get titles and labelled axes.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["show_images", "grid_points", "plot_density", "plot_samples", "plot_deformed_grid"]


def _to_numpy(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def show_images(images, nrow: int | None = None, shape: tuple[int, int] | None = (8, 8), ax=None, title: str = "",
                vmin: float | None = None, vmax: float | None = None, cmap: str = "gray_r", pad: int = 1):
    """Show a batch of images as one grid.

    ``images`` is ``(n, h*w)`` (reshaped with ``shape``, default 8x8 for the digits) or
    ``(n, h, w)``. ``nrow`` images per row (default: about sqrt(n)).
    """
    arr = _to_numpy(images).astype(float)
    if arr.ndim == 2:
        if shape is None or shape[0] * shape[1] != arr.shape[1]:
            raise ValueError(f"images of {arr.shape[1]} values cannot be shown as {shape}; pass shape=(h, w)")
        arr = arr.reshape(-1, *shape)
    if arr.ndim != 3:
        raise ValueError(f"expected images of shape (n, h*w) or (n, h, w), got {arr.shape}")
    n, h, w = arr.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol_rows = int(math.ceil(n / nrow))
    lo = np.nanmin(arr) if vmin is None else vmin
    grid = np.full((ncol_rows * (h + pad) - pad, nrow * (w + pad) - pad), np.nan)
    for k in range(n):
        r, c = divmod(k, nrow)
        grid[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = arr[k]
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 + 0.35 * nrow, 0.5 + 0.35 * ncol_rows))
    cmap_obj = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(grid, cmap=cmap_obj, vmin=lo, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def grid_points(lim: float | tuple[float, float, float, float] = 4.0, n: int = 200, dtype=torch.float32, device=None):
    """A regular ``n x n`` grid of cell centres on ``[-lim, lim]^2`` (or ``(x0, x1, y0, y1)``).

    Returns ``(points, xs, ys, cell_area)`` with ``points`` of shape ``(n*n, 2)`` in row-major
    order (``y`` slow, ``x`` fast), so ``values.reshape(n, n)`` is an image with ``x`` along columns.
    """
    x0, x1, y0, y1 = (-lim, lim, -lim, lim) if np.isscalar(lim) else lim
    if not (x1 > x0 and y1 > y0) or n < 2:
        raise ValueError(f"need a non-empty box and n >= 2, got lim={lim!r}, n={n!r}")
    hx, hy = (x1 - x0) / n, (y1 - y0) / n
    xs = x0 + hx * (torch.arange(n, dtype=dtype, device=device) + 0.5)
    ys = y0 + hy * (torch.arange(n, dtype=dtype, device=device) + 0.5)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), xs, ys, hx * hy


def plot_density(log_prob, lim=4.0, n: int = 200, ax=None, title: str = "", cmap: str = "viridis",
                 batch: int = 65536, log: bool = False):
    """Image of ``exp(log_prob(x))`` on a grid over ``[-lim, lim]^2``.

    ``log_prob`` is a function of a ``(m, 2)`` tensor (e.g. ``flow.log_prob``, or a target's
    ``log_target``); it is evaluated without gradients, in chunks of ``batch`` points, on the
    device and dtype of ``log_prob``'s module when it is a bound method of one. ``log=True``
    shows the log-density instead. Returns the axis.
    """
    owner = getattr(log_prob, "__self__", None)
    dev, dtype = None, torch.float32
    if isinstance(owner, torch.nn.Module):
        p = next(owner.parameters(), None)
        if p is not None:
            dev, dtype = p.device, p.dtype
    pts, xs, ys, _ = grid_points(lim, n, dtype=dtype, device=dev)
    with torch.no_grad():
        vals = torch.cat([log_prob(c) for c in pts.split(batch)])
    img = vals if log else vals.exp()
    img = _to_numpy(img).reshape(n, n)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    xs_, ys_ = _to_numpy(xs), _to_numpy(ys)
    ax.imshow(img, origin="lower", extent=(xs_[0], xs_[-1], ys_[0], ys_[-1]), cmap=cmap, aspect="equal",
              interpolation="nearest")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title or ("log-density" if log else "density"))
    return ax


def plot_samples(x, ax=None, title: str = "", lim=4.0, s: float = 2.0, alpha: float = 0.5, color=None,
                 bins: int | None = None):
    """Scatter of 2-D samples ``x`` of shape ``(n, 2)`` (a 2-D histogram when ``bins`` is given)."""
    arr = _to_numpy(x)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"plot_samples draws points of shape (n, 2), got {arr.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    box = (-lim, lim, -lim, lim) if np.isscalar(lim) else lim
    if bins:
        ax.hist2d(arr[:, 0], arr[:, 1], bins=bins, range=[box[:2], box[2:]], cmap="viridis")
    else:
        ax.scatter(arr[:, 0], arr[:, 1], s=s, alpha=alpha, color=color, linewidths=0)
    ax.set_xlim(box[:2])
    ax.set_ylim(box[2:])
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title or f"{len(arr)} samples")
    return ax


def plot_deformed_grid(fn, lim=3.0, n_lines: int = 21, n_points: int = 200, ax=None, title: str = "",
                       color: str = "C0", lw: float = 0.7):
    """Draw the image under ``fn`` of the grid lines of ``[-lim, lim]^2``.

    ``fn`` maps a ``(m, 2)`` tensor to a ``(m, 2)`` tensor, or to a tuple whose first element is
    that (so a coursekit ``Bijection`` can be passed directly: ``plot_deformed_grid(T)``).
    """
    owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    dev, dtype = None, torch.float32
    if isinstance(owner, torch.nn.Module):
        p = next(owner.parameters(), None)
        if p is not None:
            dev, dtype = p.device, p.dtype
    t = torch.linspace(-lim, lim, n_points, dtype=dtype, device=dev)
    levels = torch.linspace(-lim, lim, n_lines, dtype=dtype, device=dev)
    vertical = torch.stack([levels[:, None].expand(-1, n_points), t[None].expand(n_lines, -1)], -1)
    horizontal = vertical.flip(-1)
    pts = torch.cat([vertical, horizontal]).reshape(-1, 2)
    with torch.no_grad():
        out = fn(pts)
    out = out[0] if isinstance(out, tuple) else out
    lines = _to_numpy(out).reshape(2 * n_lines, n_points, 2)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    for line in lines:
        ax.plot(line[:, 0], line[:, 1], color=color, lw=lw)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title or "image of a grid")
    return ax
