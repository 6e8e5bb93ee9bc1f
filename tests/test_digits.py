"""coursekit.data.digits: the seeded, stratified split of scikit-learn's digits."""

import numpy as np
import pytest
import torch

from coursekit.data import digits as D


def _rows(x, y):
    """Images with labels as a sorted multiset of rows (order-free comparison)."""
    a = np.concatenate([x.numpy(), y.numpy()[:, None]], 1)
    return a[np.lexsort(a.T[::-1])]


def test_shapes_dtypes_and_scale():
    d = D.load_digits_split(seed=0)
    for x, y in ((d.train, d.train_labels), (d.val, d.val_labels), (d.test, d.test_labels)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.dim() == 2 and x.shape[1] == D.DIGITS_DIM == 64 and y.shape == (x.shape[0],)
        assert torch.equal(x, x.round()) and x.min() >= 0 and x.max() <= D.DIGITS_MAX
    assert (len(d.val), len(d.test)) == (round(0.15 * 1797), round(0.15 * 1797))
    assert "train=(1257, 64)" in repr(d)


def test_split_is_a_partition_of_the_data_set():
    from sklearn.datasets import load_digits

    full = load_digits()
    d = D.load_digits_split(seed=3)
    xs = torch.cat([d.train, d.val, d.test])
    ys = torch.cat([d.train_labels, d.val_labels, d.test_labels])
    expected = _rows(torch.as_tensor(full.data, dtype=torch.float32), torch.as_tensor(full.target))
    np.testing.assert_array_equal(_rows(xs, ys), expected)


def test_seeded_stratified_and_reproducible():
    a, b, c = D.load_digits_split(seed=0), D.load_digits_split(seed=0), D.load_digits_split(seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.train, c.train)
    for labels in (a.train_labels, a.val_labels, a.test_labels):
        counts = torch.bincount(labels, minlength=10)
        assert (counts > 0).all()
        # stratified: class proportions within 2 images of the overall ones
        expected = torch.bincount(torch.cat([a.train_labels, a.val_labels, a.test_labels])) * len(labels) / 1797
        assert (counts - expected).abs().max() <= 2


def test_sizes_as_counts_and_class_subsets():
    d = D.load_digits_split(val=100, test=50, classes=[0, 1])
    assert len(d.val) == 100 and len(d.test) == 50
    assert set(torch.cat([d.train_labels, d.val_labels, d.test_labels]).tolist()) == {0, 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(val=0.6, test=0.5), "no training image"),
        (dict(val=1.5), "fraction"),
        (dict(test=-3), "negative"),
        (dict(seed=-1), "seed"),
        (dict(classes=[11]), "subset of 0..9"),
        (dict(val="10%"), "fraction in"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        D.load_digits_split(**kwargs)


def test_unit_scale_and_dequantization():
    d = D.load_digits_split()
    u = D.to_unit(d.train)
    assert u.min() == 0 and u.max() == 1
    assert torch.allclose(D.from_unit(u), d.train)
    g = torch.Generator().manual_seed(0)
    v = D.dequantize(d.train, generator=g)
    assert v.min() >= 0 and v.max() < 1
    # the dequantised value falls in the bin of its integer pixel
    assert torch.equal(torch.floor(v * (D.DIGITS_MAX + 1)), d.train)
    with pytest.raises(TypeError, match="float images"):
        D.dequantize(d.train.long())
