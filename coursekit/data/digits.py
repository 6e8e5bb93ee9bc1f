"""scikit-learn's handwritten digits as torch tensors, with a fixed seeded train/validation/test split.

The UCI optical digits (Alpaydin and Kaynak, 1998) ship with scikit-learn (``sklearn.datasets.load_digits``),
so nothing is downloaded: 1,797 grey-scale images of 8x8 pixels, each pixel an integer
count in ``0..16``, flattened to vectors of dimension ``p = 64`` (row-major, like
``image.reshape(64)``), with their class labels ``0..9``.

The split is stratified by class and depends only on ``seed``: every chapter that calls
:func:`load_digits_split` with the same arguments gets the same images in the same order.

>>> d = load_digits_split(seed=0)
>>> d.train.shape, d.train.dtype, float(d.train.max())
(torch.Size([1257, 64]), torch.float32, 16.0)
>>> len(d.train) + len(d.val) + len(d.test)
1797
>>> float(to_unit(d.train).max())
1.0
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import _validate as V

__all__ = [
    "DIGITS_MAX",
    "DIGITS_SHAPE",
    "DIGITS_DIM",
    "DigitsSplit",
    "load_digits_split",
    "to_unit",
    "from_unit",
    "dequantize",
]

DIGITS_MAX = 16.0
"""Largest pixel value of the digits (pixels are integers in ``0..16``)."""
DIGITS_SHAPE = (8, 8)
"""Shape of one image."""
DIGITS_DIM = 64
"""Data dimension ``p`` of a flattened image."""


class DigitsSplit(NamedTuple):
    """Images ``(n, 64)`` float32 in the original ``0..16`` scale and labels ``(n,)`` int64."""

    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor
    val_labels: Tensor
    test_labels: Tensor

    def __repr__(self) -> str:
        return (
            f"DigitsSplit(train={tuple(self.train.shape)}, val={tuple(self.val.shape)}, "
            f"test={tuple(self.test.shape)}, scale=0..{DIGITS_MAX:g}, device={self.train.device})"
        )


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def _count(fraction_or_count: float | int, n: int, name: str) -> int:
    """A split size given as a fraction in [0, 1) of ``n`` or as a number of images."""
    v = fraction_or_count
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a fraction in [0, 1) or a number of images, got {v!r}")
    if isinstance(v, float):
        if not 0.0 <= v < 1.0:  # NaN fails this too
            raise ValueError(f"{name}={v} as a fraction must lie in [0, 1); pass an int for a number of images")
        return int(round(v * n))
    if v < 0:
        raise ValueError(f"{name}={v} images is negative")
    return int(v)


def _shares(total: int, sizes: np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``sizes`` (largest-remainder rounding)."""
    quota = total * sizes / sizes.sum()
    share = np.floor(quota).astype(int)
    share[np.argsort(share - quota)[: total - share.sum()]] += 1
    return share


def load_digits_split(
    seed: int = 0,
    val: float | int = 0.15,
    test: float | int = 0.15,
    classes: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> DigitsSplit:
    """Load the digits and split them into train / validation / test sets.

    Args:
        seed: seed of the split (a NumPy generator of its own; the global RNGs are untouched).
        val, test: size of the validation and test sets, each a fraction in ``[0, 1)`` of the
            images or an ``int`` number of images. The split is stratified: each class is
            shuffled and cut in the same proportions, so all three sets hold every digit.
        classes: keep only these digit classes (e.g. ``[0]``); default all ten.
        device: where to put the tensors (default CPU).

    Returns:
        a :class:`DigitsSplit` of float32 images ``(n, 64)`` with values in ``0..16`` and
        int64 labels. Use :func:`to_unit` for values in ``[0, 1]``.
    """
    V.seed("seed", seed)
    data, target = _raw()
    if classes is not None:
        classes = sorted(set(V.int_sequence("classes", classes, low=0)))
        if not classes or any(c < 0 or c > 9 for c in classes):
            raise ValueError(f"classes must be a non-empty subset of 0..9, got {classes}")
        keep = np.isin(target, classes)
        data, target = data[keep], target[keep]
    n = len(target)
    n_val, n_test = _count(val, n, "val"), _count(test, n, "test")
    if n_val + n_test >= n:
        raise ValueError(f"val ({n_val}) + test ({n_test}) images leave no training image out of {n}; ask for less")

    rng = np.random.default_rng(seed)
    labels, sizes = np.unique(target, return_counts=True)
    # stratify: each class gives its share of the validation and test images; shares are
    # rounded by largest remainder so that the totals are exactly n_val and n_test
    k_val, k_test = _shares(n_val, sizes), _shares(n_test, sizes)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c, kv, kt in zip(labels, k_val, k_test):
        idx = rng.permutation(np.flatnonzero(target == c))
        parts["val"].append(idx[:kv])
        parts["test"].append(idx[kv: kv + kt])
        parts["train"].append(idx[kv + kt:])
    split = {k: np.concatenate(v) for k, v in parts.items()}
    # shuffle within each set so that classes are mixed (minibatches see every digit)
    split = {k: rng.permutation(v) for k, v in split.items()}

    dev = torch.device(device) if device is not None else torch.device("cpu")

    def images(idx):
        return torch.as_tensor(data[idx], dtype=torch.float32, device=dev)

    def labs(idx):
        return torch.as_tensor(target[idx], dtype=torch.int64, device=dev)

    return DigitsSplit(
        train=images(split["train"]),
        val=images(split["val"]),
        test=images(split["test"]),
        train_labels=labs(split["train"]),
        val_labels=labs(split["val"]),
        test_labels=labs(split["test"]),
    )


def to_unit(x: Tensor) -> Tensor:
    """Map pixel values from ``0..16`` to ``[0, 1]`` (divide by 16)."""
    V.tensor("x", x, floating=False, finite=False)
    return x / DIGITS_MAX


def from_unit(u: Tensor) -> Tensor:
    """Inverse of :func:`to_unit`: map ``[0, 1]`` back to the ``0..16`` scale."""
    V.tensor("u", u, floating=False, finite=False)
    return u * DIGITS_MAX


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation: ``(x + U) / 17`` with ``U ~ Uniform[0, 1)^p``, values in ``[0, 1)``.

    Pixels are integers, so a continuous density on them is degenerate (it can grow without
    bound on the 17 atoms); adding uniform noise gives a continuous law whose log-likelihood
    lower-bounds the discrete one (Theis et al., 2016). Input in the ``0..16`` scale.
    """
    from ..flows.images import uniform_dequantize  # the one implementation (it also checks the values)

    V.tensor("x", x, floating=False, finite=False)
    if not torch.is_floating_point(x):
        raise TypeError(f"dequantize expects float images in the 0..16 scale, got dtype {x.dtype}")
    return uniform_dequantize(x, int(DIGITS_MAX) + 1, generator)
