"""Indian Pines: WxW windows around labelled pixels, per-class splits, training-set normalisation.

Border handling: the cube is padded by (W-1)/2 pixels on each side, mirrored (``border: reflect``,
default) or with zeros (``border: zero``), so every labelled pixel, including those at the image
edge, gets a full window. A window larger than the image is an error.

Splits (``split``):
- ``random``: per class, a fixed-seed random ``train_fraction`` (at least 1 pixel, at most all but
  one) or ``train_count`` pixels train; the rest test. Training and test *windows* overlap.
- ``blocks``: the image is cut into ``block_size`` squares assigned whole to training until each
  class has its share; test pixels whose window would reach a training pixel are dropped, so no
  test window contains a training pixel (Nalepa et al., arXiv:1811.03707).
``validation_split`` moves that fraction of each class's training pixels to validation (random);
in the block split, whole blocks holding that fraction of each class's held-out pixels.

Normalisation uses training pixels only: one mean/std (``global``, as the source) or one per band.
Patches of all labelled pixels are cached in HDF5, keyed by the cube's content, window and border.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from hpcdl.config import IndianPinesData
from hpcdl.datasets.base import ArraySplit, Prepared, WindowSplit, gather_windows
from hpcdl.datasets.sources import data_root, read_mat_array, require_file
from hpcdl.errors import HpcdlError
from hpcdl.files import atomic_path

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
SCENE_SHAPE = (145, 145)  # rows, columns of the AVIRIS Indian Pines scene
VARIANTS = {  # variant: (file, key, bands)
    "corrected": ("Indian_pines_corrected.mat", "indian_pines_corrected", 200),
    "uncorrected": ("Indian_pines.mat", "indian_pines", 220),
}


def load_scene(cfg: IndianPinesData) -> tuple[np.ndarray, np.ndarray]:
    """(cube (H, W, bands), ground truth (H, W) with 0 = unlabelled) of the configured variant."""
    root = data_root(cfg.dir)
    name, key, bands = VARIANTS[cfg.variant]
    cube = read_mat_array(require_file("indian_pines", name, root), key)
    gt = read_mat_array(
        require_file("indian_pines", "Indian_pines_gt.mat", root), "indian_pines_gt"
    )
    if cube.ndim != 3 or cube.shape[:2] != gt.shape:
        raise HpcdlError(f"indian_pines: cube {cube.shape} does not match ground truth {gt.shape}")
    if cube.shape[2] != bands:
        log.warning(
            "indian_pines %s cube has %d bands (expected %d)", cfg.variant, cube.shape[2], bands
        )
    return cube, gt.astype(np.int64)


def pad_cube(cube: np.ndarray, window: int, border: str) -> np.ndarray:
    """Pad rows and columns by window // 2 so every pixel has a full window."""
    h, w = cube.shape[:2]
    if window > min(h, w):
        raise HpcdlError(f"data.window: {window} is larger than the image ({h}x{w})")
    r = window // 2
    mode = "reflect" if border == "reflect" else "constant"
    return np.pad(cube, ((r, r), (r, r), (0, 0)), mode=mode)


def labelled_pixels(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coords (n, 2), labels 0..C-1) of all labelled pixels in row-major order."""
    coords = np.argwhere(gt > 0)
    return coords, gt[coords[:, 0], coords[:, 1]] - 1


def _per_class_target(n: int, cfg: IndianPinesData) -> int:
    want = cfg.train_count if cfg.train_count is not None else round(cfg.train_fraction * n)
    return int(min(max(want, 1), n - 1))


def split_random(labels: np.ndarray, cfg: IndianPinesData) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, repeatable split: (train indices, test indices) into the labelled pixels."""
    rng = np.random.default_rng(cfg.split_seed)
    train = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        train.append(rng.permutation(members)[: _per_class_target(len(members), cfg)])
    train = np.sort(np.concatenate(train))
    test = np.setdiff1d(np.arange(len(labels)), train)
    return train, test


def split_blocks(
    coords: np.ndarray, labels: np.ndarray, cfg: IndianPinesData, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Spatially disjoint split: training pixels come block by block; no test window holds one."""
    rng = np.random.default_rng(cfg.split_seed)
    b = cfg.block_size
    block_of = (coords[:, 0] // b) * ((shape[1] + b - 1) // b) + coords[:, 1] // b
    classes = np.unique(labels)
    target = {c: _per_class_target(int((labels == c).sum()), cfg) for c in classes}
    have = dict.fromkeys(classes, 0)
    chosen = []
    for block in rng.permutation(np.unique(block_of)):
        members = np.flatnonzero(block_of == block)
        # a block trains only the classes that still need pixels; its other pixels are left out
        # of both sets (they would sit next to training pixels anyway)
        needed = [c for c in classes if have[c] < target[c]]
        if not needed:
            break
        for c in needed:
            # row-major order keeps the taken pixels of a class contiguous inside the block
            take = members[labels[members] == c][: target[c] - have[c]]
            if len(take):
                chosen.append(take)
                have[c] += len(take)
    train = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)
    # a test pixel is kept only if no training pixel lies inside its window
    near = near_pixels(coords[train], shape, cfg.window)
    rest = np.setdiff1d(np.arange(len(labels)), train)
    test = rest[~near[coords[rest, 0], coords[rest, 1]]]
    return train, test


def near_pixels(pixels: np.ndarray, shape: tuple[int, int], window: int) -> np.ndarray:
    """Mask of the image's pixels whose window (window x window around them) holds one of
    `pixels` (rows, columns)."""
    marked = np.zeros(shape, dtype=bool)
    marked[pixels[:, 0], pixels[:, 1]] = True
    padded = np.pad(marked, window // 2)
    near = np.zeros(shape, dtype=bool)
    for dy in range(window):
        for dx in range(window):
            near |= padded[dy : dy + shape[0], dx : dx + shape[1]]
    return near


def split_validation_blocks(
    test: np.ndarray, coords: np.ndarray, labels: np.ndarray, cfg: IndianPinesData, shape
) -> tuple[np.ndarray, np.ndarray]:
    """Validation for the block split: whole blocks of the held-out pixels (none has a training
    pixel in its window) move to validation until each class has about `validation_split` of its
    held-out pixels there; the rest stay test. Training keeps every pixel (blocks of the training
    share would leave a few dozen validation pixels of a few classes once the pixels next to
    training are dropped: too few to rank settings on)."""
    if cfg.validation_split <= 0:
        return np.array([], dtype=int), test
    rng = np.random.default_rng(cfg.split_seed + 1)
    b = cfg.block_size
    block_of = (coords[test, 0] // b) * ((shape[1] + b - 1) // b) + coords[test, 1] // b
    classes = np.unique(labels[test])
    target = {c: cfg.validation_split * (labels[test] == c).sum() for c in classes}
    have = dict.fromkeys(classes, 0)
    moved = []
    for block in rng.permutation(np.unique(block_of)):
        members = test[block_of == block]
        found, counts = np.unique(labels[members], return_counts=True)
        # a block moves when one of its classes needs pixels and none would go far over
        needs = any(have[c] < target[c] for c in found)
        fits = all(have[c] + n <= 1.5 * target[c] + 1 for c, n in zip(found, counts, strict=True))
        if needs and fits:
            moved.append(members)
            for c, n in zip(found, counts, strict=True):
                have[c] += n
    val = np.sort(np.concatenate(moved)) if moved else np.array([], dtype=int)
    return val, np.setdiff1d(test, val)


def split_validation(
    train: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Move `fraction` of each class's training pixels to a validation set."""
    if fraction <= 0:
        return train, np.array([], dtype=int)
    rng = np.random.default_rng(seed + 1)
    val = []
    for c in np.unique(labels[train]):
        members = rng.permutation(train[labels[train] == c])
        val.append(members[: int(round(fraction * len(members)))])
    val = np.sort(np.concatenate(val))
    return np.setdiff1d(train, val), val


# ---------------------------------------------------------------- patch cache
def cache_root(cfg: IndianPinesData) -> Path:
    """Where patch caches live: data.cache_dir, else $HPCDL_CACHE_DIR, else ~/.cache/hpcdl/cache."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("HPCDL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hpcdl" / "cache"


def cache_key(cube: np.ndarray, gt: np.ndarray, window: int, border: str) -> str:
    """Everything that changes the patches: cube and labels content, window, border, format."""
    h = hashlib.sha256()
    for part in (
        cube.tobytes(),
        gt.tobytes(),
        str(cube.shape).encode(),
        str(cube.dtype).encode(),
        f"w{window}-{border}-v{CACHE_FORMAT}".encode(),
    ):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def cached_patches(
    cfg: IndianPinesData, padded: np.ndarray, coords: np.ndarray, key: str
) -> np.ndarray | None:
    """Patches of all labelled pixels from the HDF5 cache, building it first if needed.

    Safe when many array tasks start at once: one builds under an exclusive lock, writes to a
    temporary file and renames it into place; the others wait for the lock and then read. Returns
    None (and warns) when the cache folder is not writable.
    """
    import h5py

    folder = cache_root(cfg)
    path = folder / f"indian_pines_{cfg.variant}_w{cfg.window}_{cfg.border}_{key}.h5"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / (path.name + ".lock"), "a")  # noqa: SIM115 (held while building)
    except OSError as err:
        log.warning("patch cache disabled: %s is not writable (%s)", folder, err.strerror)
        return None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            patches = gather_windows(padded, coords, cfg.window)
            with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset("patches", data=patches)
                f.create_dataset("coords", data=coords)
                f.attrs["key"] = key
            return patches
    with h5py.File(path, "r", locking=False) as f:
        if f.attrs.get("key") != key or not np.array_equal(f["coords"][:], coords):
            raise HpcdlError(f"{path}: patch cache does not match its key; delete it")
        return f["patches"][:]


# ---------------------------------------------------------------- assembling
def prepare(cfg: IndianPinesData) -> Prepared:
    """Load, split, normalise (training statistics only) and wrap the splits for training."""
    cube, gt = load_scene(cfg)
    padded = pad_cube(cube, cfg.window, cfg.border)
    coords, labels = labelled_pixels(gt)
    if cfg.split == "random":
        train, test = split_random(labels, cfg)
        train, val = split_validation(train, labels, cfg.validation_split, cfg.split_seed)
    else:  # validation as disjoint from training as the test pixels are
        train, test = split_blocks(coords, labels, cfg, gt.shape)
        val, test = split_validation_blocks(test, coords, labels, cfg, gt.shape)
    if len(test) == 0:
        raise HpcdlError(
            "data: the split leaves no test pixels; lower train_fraction or block_size"
        )

    patches = (
        cached_patches(cfg, padded, coords, cache_key(cube, gt, cfg.window, cfg.border))
        if cfg.cache
        else None
    )

    # statistics of the training pixels' windows (the spectra the model is trained on)
    train_windows = (
        patches[train] if patches is not None else gather_windows(padded, coords[train], cfg.window)
    ).astype(np.float64)
    if cfg.normalize == "global":
        offset, scale = float(train_windows.mean()), float(train_windows.std())
    else:
        axes = (0, 1, 2)
        offset = train_windows.mean(axis=axes).astype(np.float32)
        scale = np.maximum(train_windows.std(axis=axes), 1e-6).astype(np.float32)
    del train_windows

    def part(idx: np.ndarray):
        if patches is not None:
            return ArraySplit(patches[idx], labels[idx], offset, scale, coords[idx])
        return WindowSplit(padded, coords[idx], labels[idx], cfg.window, offset, scale)

    n_classes = int(labels.max()) + 1
    return Prepared(
        train=part(train),
        val=part(val) if len(val) else None,
        test=part(test),
        n_classes=n_classes,
        input_shape=(cfg.window, cfg.window, cube.shape[2], 1),
        info={
            "train": len(train),
            "val": len(val),
            "test": len(test),
            "bands": int(cube.shape[2]),
            "mean": offset if cfg.normalize == "global" else None,
            "std": scale if cfg.normalize == "global" else None,
            "train_per_class": np.bincount(labels[train], minlength=n_classes).tolist(),
            "test_per_class": np.bincount(labels[test], minlength=n_classes).tolist(),
            "scene_shape": tuple(int(n) for n in cube.shape[:2]),
            "train_coords": coords[train],
            "test_coords": coords[test],
        },
    )
