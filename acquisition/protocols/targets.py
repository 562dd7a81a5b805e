"""Target image sets for the generalisation protocol (seed 003), all read from local files only.

Seed 003 shows MNIST digits and LFW faces on the DMD. Offline equivalents that ship with the
installed packages are the defaults: scikit-learn's 8x8 digits (``load_digits``, framed like
MNIST), scikit-image's LFW face subset (``skimage.data.lfw_subset``, 100 faces) and scikit-image's
bundled photographs (dense grayscale content). Real MNIST IDX files (gzipped or not) and folders of
PNG/JPEG/TIFF images are read from paths the user gives. Every set returns float images in [0, 1]
of any size; the protocol resizes them. Sets load lazily: expanding a plan must not read 60000
MNIST images.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

TargetSource = Literal["digits", "faces", "images", "mnist", "folder"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# scikit-image images shipped inside the wheel (skimage/data/*.png|jpg): no network access needed.
BUNDLED_IMAGES = (
    "camera", "moon", "coins", "page", "text", "brick", "grass", "gravel", "cell", "clock",
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "shepp_logan_phantom",
)  # fmt: skip
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class TargetSetSpec(BaseModel):
    """Where a set of target images comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    source: TargetSource = "digits"
    path: str | None = Field(default=None, description="IDX images file (mnist) or folder (folder)")
    count: int | None = Field(
        default=None, ge=1, description="use at most this many images; for 'images', >17 adds random crops"
    )
    seed: int = Field(default=0, description="seeds the random crops of the 'images' source")

    @model_validator(mode="after")
    def _path_when_needed(self) -> TargetSetSpec:
        if self.source in ("mnist", "folder") and not self.path:
            raise ValueError(f"source '{self.source}' needs a 'path'")
        if self.source not in ("mnist", "folder") and self.path:
            raise ValueError(f"source '{self.source}' is bundled and takes no 'path'")
        return self


class TargetSet(Protocol):
    """A finite, indexable set of grayscale images."""

    name: str

    def __len__(self) -> int: ...

    def image(self, index: int) -> np.ndarray:
        """Float image in [0, 1], 2-D, any size."""


def to_unit_gray(img: np.ndarray) -> np.ndarray:
    """2-D float image in [0, 1]: colour to luminance, alpha dropped, integer types scaled by their range."""
    a = np.asarray(img)
    if a.ndim == 3:
        from skimage.color import rgb2gray

        if a.shape[-1] == 4:
            a = a[..., :3]
        a = rgb2gray(a) if a.shape[-1] == 3 else a[..., 0]
        return np.clip(a.astype(float), 0.0, 1.0)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D or colour image, got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(float)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(float) / float(np.iinfo(a.dtype).max)
    return np.clip(a.astype(float), 0.0, 1.0)


def square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (bilinear, anti-aliased when shrinking)."""
    from skimage.transform import resize

    h, w = img.shape
    s = min(h, w)
    r0, c0 = (h - s) // 2, (w - s) // 2
    sq = img[r0 : r0 + s, c0 : c0 + s]
    if s == size:
        return sq.astype(float)
    return np.clip(resize(sq, (size, size), order=1, anti_aliasing=s > size), 0.0, 1.0)


class ArraySet:
    """A set held as one array (N, H, W), already scaled to [0, 1]."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self.name = name
        self._images = images

    def __len__(self) -> int:
        return len(self._images)

    def image(self, index: int) -> np.ndarray:
        return np.asarray(self._images[index], dtype=float)


MNIST_BOX_PX, MNIST_FRAME_PX = 20, 28
"""MNIST digits are size-normalised into a 20x20 box centred in a 28x28 frame."""


def digits_set() -> ArraySet:
    """scikit-learn's 1797 handwritten digits (8x8, 0..16) framed like MNIST, scaled to [0, 1].

    The 8x8 digits fill their frame to the edge; MNIST digits leave a 4-pixel (1/7) border that no
    digit lights, the "black edge" of seed 003 Fig. 1b that cases 3-5 are about. Each digit is
    therefore resized to the 20x20 box and padded to 28x28, as MNIST is.
    """
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    imgs = load_digits().images / 16.0
    box = np.clip(resize(imgs, (len(imgs), MNIST_BOX_PX, MNIST_BOX_PX), order=1), 0.0, 1.0)
    pad = (MNIST_FRAME_PX - MNIST_BOX_PX) // 2
    return ArraySet("digits", np.pad(box, ((0, 0), (pad, pad), (pad, pad))))


def faces_set() -> ArraySet:
    """The 100 LFW faces bundled with scikit-image (25x25 gray): the seed 003 face set, offline."""
    from skimage.data import lfw_subset

    return ArraySet("faces", lfw_subset()[:100].astype(float))


class BundledImagesSet:
    """scikit-image's bundled photographs as dense grayscale targets.

    Index i < 17 is whole image i (centre square); larger indices are random square crops (half to
    full short side) of image i mod 17, drawn from ``default_rng([seed, i])`` so they are reproducible.
    """

    name = "images"

    def __init__(self, count: int | None = None, seed: int = 0) -> None:
        self._count = count if count is not None else len(BUNDLED_IMAGES)
        self._seed = seed
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._count

    def _base(self, k: int) -> np.ndarray:
        if k not in self._cache:
            import skimage.data

            self._cache[k] = to_unit_gray(getattr(skimage.data, BUNDLED_IMAGES[k])())
        return self._cache[k]

    def image(self, index: int) -> np.ndarray:
        if not 0 <= index < self._count:
            raise IndexError(index)
        n = len(BUNDLED_IMAGES)
        base = self._base(index % n)
        if index < n:
            return base
        rng = np.random.default_rng([self._seed, index])
        h, w = base.shape
        s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        r0 = int(rng.integers(0, h - s + 1))
        c0 = int(rng.integers(0, w - s + 1))
        return base[r0 : r0 + s, c0 : c0 + s]


def _open_maybe_gz(path: Path):  # noqa: ANN202 - a binary file object
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and shape from an IDX header (magic 0,0,type,ndim then ndim big-endian uint32 sizes)."""
    with _open_maybe_gz(Path(path)) as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
            raise ValueError(f"{path}: not an IDX file (magic bytes {magic!r})")
        ndim = magic[3]
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
    return np.dtype(_IDX_DTYPES[magic[2]]), tuple(shape)


def read_idx(path: str | Path) -> np.ndarray:
    """Read a whole IDX file (e.g. MNIST ``train-images-idx3-ubyte[.gz]``) into a native-endian array."""
    dtype, shape = read_idx_header(path)
    with _open_maybe_gz(Path(path)) as f:
        f.seek(4 + 4 * len(shape))
        data = f.read()
    count = int(np.prod(shape)) if shape else 1
    if len(data) < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX data ({len(data)} bytes for shape {shape})")
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as IDX (gzipped when the name ends in .gz); the inverse of :func:`read_idx`."""
    a = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(a.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"dtype {a.dtype} has no IDX code")
    payload = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    payload += a.astype(_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


class MnistIdxSet:
    """Images from a local MNIST-style IDX file (N, H, W); read on first use, not at construction."""

    name = "mnist"

    def __init__(self, path: str | Path, count: int | None = None) -> None:
        self._path = Path(path)
        dtype, shape = read_idx_header(self._path)
        if len(shape) != 3:
            raise ValueError(f"{path}: expected an IDX image file of shape (N, H, W), got {shape}")
        self._dtype = dtype
        self._len = shape[0] if count is None else min(count, shape[0])

    def __len__(self) -> int:
        return self._len

    @cached_property
    def _images(self) -> np.ndarray:
        return read_idx(self._path)

    def image(self, index: int) -> np.ndarray:
        if not 0 <= index < self._len:
            raise IndexError(index)
        return to_unit_gray(self._images[index])


class FolderSet:
    """PNG/JPEG/TIFF files of a folder (sorted by name, not recursive), read with scikit-image on demand."""

    name = "folder"

    def __init__(self, path: str | Path, count: int | None = None) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"target folder {folder} does not exist")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"target folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} images")
        self.files: Sequence[Path] = files[:count] if count is not None else files

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        from skimage.io import imread

        return to_unit_gray(imread(self.files[index]))


def make_target_set(spec: TargetSetSpec) -> TargetSet:
    """Build the set a spec names (limited to ``count`` images where given)."""
    if spec.source == "digits":
        s: TargetSet = digits_set()
    elif spec.source == "faces":
        s = faces_set()
    elif spec.source == "images":
        return BundledImagesSet(spec.count, spec.seed)
    elif spec.source == "mnist":
        return MnistIdxSet(spec.path or "", spec.count)
    else:
        return FolderSet(spec.path or "", spec.count)
    if spec.count is not None and spec.count < len(s):
        s = ArraySet(s.name, s._images[: spec.count])  # type: ignore[attr-defined]
    return s
