"""Loaders on the real MNIST and Indian Pines files."""

import gzip
import multiprocessing
import shutil

import numpy as np
import pytest
import scipy.io

from hpcdl.config import IndianPinesData, MnistData
from hpcdl.datasets import indian_pines, mnist, prepare
from hpcdl.errors import HpcdlError

IP_CLASS_SIZES = [46, 1428, 830, 237, 483, 730, 28, 478, 20, 972, 2455, 593, 205, 1265, 386, 93]


# ---------------------------------------------------------------- MNIST
def test_mnist_idx_files_read_with_canonical_shapes(shared_data):
    x_train, y_train, x_test, y_test = mnist.load_arrays(shared_data)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert abs(x_train.mean() / 255 - 0.1307) < 1e-4 and abs(x_train.std() / 255 - 0.3081) < 1e-4


def test_mnist_raw_idx_and_npz_give_the_same_arrays(shared_data, tmp_path):
    ref = mnist.load_arrays(shared_data)
    raw = tmp_path / "raw" / "mnist"
    raw.mkdir(parents=True)
    for gz in (shared_data / "mnist").glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    npz = tmp_path / "npz" / "mnist"
    npz.mkdir(parents=True)
    np.savez(npz / "mnist.npz", x_train=ref[0], y_train=ref[1], x_test=ref[2], y_test=ref[3])
    for root in (tmp_path / "raw", tmp_path / "npz"):
        for a, b in zip(mnist.load_arrays(root), ref, strict=True):
            assert np.array_equal(a, b)


def test_mnist_validation_split_is_the_last_fifth_like_keras(shared_data):
    data = prepare(MnistData(name="mnist", dir=str(shared_data)))
    assert (len(data.train), len(data.val), len(data.test)) == (48000, 12000, 10000)
    x_train, y_train, _, _ = mnist.load_arrays(shared_data)
    assert np.array_equal(data.val.labels, y_train[48000:])
    batch = data.train.take(np.array([0, 1]))
    assert batch.dtype == np.float32 and batch.shape == (2, 28, 28, 1)
    assert np.allclose(batch[0, ..., 0], x_train[0] / 255.0)


def test_missing_mnist_file_says_how_to_get_it(tmp_path):
    with pytest.raises(HpcdlError) as info:
        mnist.load_arrays(tmp_path)
    assert "train-images-idx3-ubyte.gz not found" in str(info.value)
    assert "hpcdl data fetch mnist" in str(info.value)


# ---------------------------------------------------------------- Indian Pines
def ip(shared_data, **kw) -> IndianPinesData:
    return IndianPinesData(name="indian_pines", dir=str(shared_data), cache=False, **kw)


def test_indian_pines_scene_has_the_documented_classes(shared_data):
    cube, gt = indian_pines.load_scene(ip(shared_data))
    assert cube.shape == (145, 145, 200) and cube.dtype == np.uint16
    assert np.bincount(gt.ravel())[1:].tolist() == IP_CLASS_SIZES


def test_random_split_is_stratified_repeatable_and_disjoint(shared_data):
    cfg = ip(shared_data)
    a, b = prepare(cfg), prepare(cfg)
    assert a.info["train_per_class"] == b.info["train_per_class"]
    assert np.array_equal(a.info["train_coords"], b.info["train_coords"])
    per_class = np.array(a.info["train_per_class"])
    sizes = np.array(IP_CLASS_SIZES)
    assert np.all(per_class >= 1) and np.all(np.abs(per_class - 0.1 * sizes) <= 1)
    assert a.info["train"] + a.info["test"] == sum(IP_CLASS_SIZES)
    # no test pixel is a training pixel, and each sample carries its own pixel's label
    train_px = {tuple(c) for c in a.info["train_coords"]}
    assert not train_px & {tuple(c) for c in a.info["test_coords"]}
    _, gt = indian_pines.load_scene(cfg)
    for split, coords in ((a.train, a.info["train_coords"]), (a.test, a.info["test_coords"])):
        assert np.array_equal(split.labels, gt[coords[:, 0], coords[:, 1]] - 1)
    other = prepare(ip(shared_data, split_seed=1))
    assert not np.array_equal(other.info["train_coords"], a.info["train_coords"])


def test_count_split_and_validation_come_from_training_pixels(shared_data):
    data = prepare(ip(shared_data, train_count=20, validation_split=0.25))
    per_class = np.array(data.info["train_per_class"])
    assert per_class.tolist() == [
        min(20, n - 1) - round(0.25 * min(20, n - 1)) for n in IP_CLASS_SIZES
    ]
    assert data.info["val"] == sum(round(0.25 * min(20, n - 1)) for n in IP_CLASS_SIZES)


def test_normalisation_uses_training_windows_only(shared_data):
    cfg = ip(shared_data)
    data = prepare(cfg)
    cube, gt = indian_pines.load_scene(cfg)
    padded = indian_pines.pad_cube(cube, 9, "reflect")
    windows = indian_pines.gather_windows(padded, data.info["train_coords"], 9).astype(np.float64)
    assert data.info["mean"] == pytest.approx(windows.mean())
    assert data.info["std"] == pytest.approx(windows.std())
    x = data.train.take(np.arange(len(data.train)))
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3
    # the centre of each window is its own pixel's spectrum
    r, c = data.info["test_coords"][0]
    assert np.allclose(
        data.test.take(np.array([0]))[0, 4, 4, :, 0],
        (cube[r, c] - data.info["mean"]) / data.info["std"],
        atol=1e-4,
    )


def test_border_pixels_get_mirrored_or_zero_windows(shared_data):
    cube, _ = indian_pines.load_scene(ip(shared_data))
    padded = indian_pines.pad_cube(cube, 9, "reflect")
    corner = indian_pines.gather_windows(padded, np.array([[0, 0]]), 9)[0]
    assert np.array_equal(corner[4, 4], cube[0, 0]) and np.array_equal(corner[3, 4], cube[1, 0])
    zero = indian_pines.gather_windows(
        indian_pines.pad_cube(cube, 9, "zero"), np.array([[0, 0]]), 9
    )
    assert not zero[0, :4].any() and np.array_equal(zero[0, 4, 4], cube[0, 0])


def test_window_larger_than_image_is_an_error(shared_data):
    with pytest.raises(HpcdlError, match="larger than the image"):
        prepare(ip(shared_data, window=147))


def test_block_split_keeps_test_windows_free_of_training_pixels(shared_data):
    data = prepare(ip(shared_data, split="blocks", block_size=16))
    train, test = data.info["train_coords"], data.info["test_coords"]
    # Chebyshev distance from every test pixel to every training pixel: more than the radius 4
    distance = np.maximum(
        np.abs(test[:, None, 0] - train[None, :, 0]), np.abs(test[:, None, 1] - train[None, :, 1])
    )
    assert distance.min() > 4
    assert abs(data.info["train"] - 0.1 * sum(IP_CLASS_SIZES)) < 20


def test_block_split_validation_is_as_disjoint_as_its_test_set(shared_data):
    """A block split's validation takes whole blocks of the held-out pixels: no validation pixel
    has a training pixel in its window (else it would rank settings on leaked windows), the
    training pixels are those of the split without validation, and validation and test share no
    block."""

    def farthest(a, b):  # the smallest Chebyshev distance between two sets of pixels
        return np.maximum(
            np.abs(a[:, None, 0] - b[None, :, 0]), np.abs(a[:, None, 1] - b[None, :, 1])
        ).min()

    data = prepare(ip(shared_data, split="blocks", block_size=16, validation_split=0.2))
    train, test = data.info["train_coords"], data.info["test_coords"]
    val = data.val.coords
    assert farthest(val, train) > 4 and farthest(test, train) > 4
    plain = prepare(ip(shared_data, split="blocks", block_size=16))
    assert np.array_equal(train, plain.info["train_coords"])  # training keeps every pixel
    held_out = {tuple(p) for p in plain.info["test_coords"]}
    assert {tuple(p) for p in val} | {tuple(p) for p in test} == held_out
    assert not {tuple(p) for p in val} & {tuple(p) for p in test}
    blocks = lambda pixels: {(r // 16, c // 16) for r, c in pixels}  # noqa: E731
    assert not blocks(val) & blocks(test)
    # about a fifth of the held-out pixels, from most classes: enough to rank settings on
    assert 0.15 < len(val) / len(held_out) < 0.35
    assert len(np.unique(data.val.labels)) >= 10


def test_220_band_uncorrected_cube_is_accepted(shared_data, tmp_path):
    folder = tmp_path / "indian_pines"
    folder.mkdir()
    cube, gt = indian_pines.load_scene(ip(shared_data))
    wide = np.concatenate([cube, cube[:, :, :20]], axis=2)  # a stand-in with the 220-band shape
    scipy.io.savemat(folder / "Indian_pines.mat", {"indian_pines": wide})
    shutil.copy(shared_data / "indian_pines" / "Indian_pines_gt.mat", folder)
    data = prepare(
        IndianPinesData(name="indian_pines", dir=str(tmp_path), variant="uncorrected", cache=False)
    )
    assert data.input_shape == (9, 9, 220, 1)


def _build_cache(args):
    shared, cache = args
    cfg = IndianPinesData(name="indian_pines", dir=shared, cache_dir=cache, window=5)
    data = prepare(cfg)
    return data.test.take(np.arange(0, 9000, 97)).sum()


def test_patch_cache_is_safe_when_jobs_start_together(shared_data, tmp_path):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        sums = pool.map(_build_cache, [(str(shared_data), str(tmp_path))] * 3)
    assert len(set(sums)) == 1
    files = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert len(files) == 1 and files[0].endswith(".h5")  # no leftover temporary files
    uncached = prepare(ip(shared_data, window=5))
    assert uncached.test.take(np.arange(0, 9000, 97)).sum() == sums[0]
