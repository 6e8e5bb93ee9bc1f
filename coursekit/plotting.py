"""Plotting helpers used across chapters (matplotlib only).

Each function draws on a given ``ax`` (or a new figure) and returns what it drew on, so that
notebooks can compose panels. Figures always get titles and labelled axes.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["show_images"]


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
    cmap_obj = plt.get_cmap(cmap).copy()
    cmap_obj.set_bad("white")
    ax.imshow(grid, cmap=cmap_obj, vmin=lo, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax
