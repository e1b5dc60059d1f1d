"""Where images come from: torchvision downloads, image folders and IDX files.

Every source returns :class:`ImageArrays` (uint8, in memory). Every failure a user can
cause (missing folder, corrupt file, failed download) is a one-line :class:`DataError`
that says what was expected where.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from clbench.datasets.base import ImageArrays
from clbench.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def default_data_root() -> Path:
    """``$CLBENCH_DATA_ROOT`` or ``$XDG_CACHE_HOME/clbench`` (``~/.cache/clbench``)."""
    env = os.environ.get("CLBENCH_DATA_ROOT")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "clbench"


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_image_folder(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted folder names, as ``ImageFolder``) and (file, class id) pairs.

    Raises:
        DataError: The folder is missing or holds no class folders with images.
    """
    if not folder.is_dir():
        raise DataError(f"image folder {folder} not found; expected {folder}/<class>/<image>.jpg")
    classes = _class_dirs(folder)
    if not classes:
        raise DataError(f"image folder {folder} has no class folders; expected {folder}/<class>/<image>.jpg")
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(classes):
        images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"class folder {class_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files.extend((p, label) for p in images)
    return [c.name for c in classes], files


def _decode(path: Path, size: int | None) -> npt.NDArray[np.uint8]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"corrupt image file {path}: {exc.__class__.__name__}") from None


def _cache_file(files: Sequence[tuple[Path, int]], size: int | None, cache_dir: Path) -> Path:
    digest = hashlib.sha1(f"size={size}".encode())
    for path, label in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
    return cache_dir / f"{digest.hexdigest()[:20]}.npz"


def decode_files(
    files: Sequence[tuple[Path, int]], class_names: Sequence[str], size: int | None, cache_dir: Path | None
) -> ImageArrays:
    """Decode image files into memory, resizing to ``size`` x ``size`` when given.

    Decoded arrays are cached in ``cache_dir`` keyed by the files' paths, sizes and
    modification times, so a second run skips JPEG decoding.
    """
    cache = _cache_file(files, size, cache_dir) if cache_dir is not None else None
    if cache is not None and cache.is_file():
        stored = _read_cache(cache, len(files))
        if stored is not None:
            return ImageArrays(*stored, tuple(class_names))
    images = np.stack([_decode(path, size) for path, _ in files]) if files else np.zeros((0, 1, 1, 3), np.uint8)
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    if cache is not None:
        _write_cache(cache, images, labels)
    return ImageArrays(images, labels, tuple(class_names))


def _read_cache(cache: Path, count: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]] | None:
    """The cached arrays, or None (the file removed) when it is corrupt or holds another number of images."""
    try:
        with np.load(cache) as stored:
            images, labels = stored["images"], stored["labels"]
        if len(images) == len(labels) == count:
            return images, labels
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    print(f"clbench: decode cache {cache} is corrupt; decoding the images again", file=sys.stderr)
    cache.unlink(missing_ok=True)
    return None


def _write_cache(cache: Path, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.int64]) -> None:
    """Cache the decoded arrays; on a full disk or a read-only folder say so and go on without it."""
    partial = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(partial, images=images, labels=labels)
        os.replace(partial, cache)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        print(
            f"clbench: cannot write the decode cache {cache} ({exc.strerror or exc}); going on without it",
            file=sys.stderr,
        )


def check_classes(folder: Path, found: Sequence[str], expected: int | Sequence[str], what: str) -> None:
    """Refuse an image folder whose class folders are not the benchmark's (a silently smaller benchmark).

    Raises:
        DataError: A class folder is missing or extra (named when ``expected`` names them).
    """
    if isinstance(expected, int):
        if len(found) != expected:
            raise DataError(f"{what}: {folder} holds {len(found)} class folders; expected {expected}")
        return
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        problem = f"missing {', '.join(missing)}" if missing else f"unexpected {', '.join(extra)}"
        raise DataError(f"{what}: class folders under {folder}: {problem}; expected {', '.join(expected)}")


def read_split_folder(
    root: Path, size: int | None, cache_dir: Path | None, what: str, expected: int | Sequence[str] | None = None
) -> tuple[ImageArrays, ImageArrays]:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*``.

    ``expected``: the benchmark's classes (names, or how many), checked in both splits.

    Raises:
        DataError: Either split is missing, the two splits name different classes, or
            they are not the expected ones.
    """
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(
            f"{what}: no image folder at {root}; expected {root}/train/<class>/*.jpg and "
            f"{root}/test/<class>/*.jpg (set --data-root or the benchmark's path argument)"
        )
    train_classes, train_files = list_image_folder(root / "train")
    test_classes, test_files = list_image_folder(root / "test")
    if expected is not None:
        check_classes(root / "train", train_classes, expected, what)
    if train_classes != test_classes:
        missing = sorted(set(train_classes) ^ set(test_classes))
        raise DataError(f"{what}: train and test folders under {root} name different classes, e.g. {missing[0]!r}")
    return (
        decode_files(train_files, train_classes, size, cache_dir),
        decode_files(test_files, test_classes, size, cache_dir),
    )


def read_torchvision_cifar(name: str, root: Path, download: bool) -> tuple[ImageArrays, ImageArrays]:
    """Load CIFAR-10 or CIFAR-100 through torchvision, downloading into ``root`` if asked.

    Raises:
        DataError: The download failed or the files in ``root`` are missing or corrupt.
    """
    from torchvision import datasets

    cls: Any = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    splits = []
    for train in (True, False):
        try:
            data = cls(str(root), train=train, download=download)
        except RuntimeError as exc:
            raise DataError(
                f"{name}: torchvision files not found or corrupt under {root} ({exc}); "
                "download them or use source: folder"
            ) from None
        except OSError as exc:
            raise DataError(
                f"{name}: download into {root} failed ({exc.__class__.__name__}: {exc}); "
                "put an offline copy there or use source: folder"
            ) from None
        splits.append(
            ImageArrays(np.asarray(data.data, np.uint8), np.asarray(data.targets, np.int64), tuple(data.classes))
        )
    return splits[0], splits[1]


IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """Read one (optionally gzipped) IDX file of unsigned bytes.

    Raises:
        DataError: The file is missing, truncated or not an unsigned-byte IDX file.
    """
    candidates = [path, path.with_name(path.name + ".gz")] if path.suffix != ".gz" else [path, path.with_suffix("")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DataError(f"IDX file {path} (or {path.name}.gz) not found")
    opener: Any = gzip.open if found.suffix == ".gz" else open
    try:
        with opener(found, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"corrupt IDX file {found}: {exc.__class__.__name__}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        raise DataError(f"corrupt IDX file {found}: bad magic number")
    n_dims = raw[3]
    header = 4 + 4 * n_dims
    shape = struct.unpack(f">{n_dims}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"corrupt IDX file {found}: expected {expected} values, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
