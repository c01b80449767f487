"""Decode each image once into an on-disk uint8 cache at the model's input size.

The dissertation spent 30-36 s per split decoding 1600x1200 JPEGs again and again; here the
decode happens once per (image set, size) and every split, epoch and model reads the cache.
The cache key covers each file's name, size and mtime and the target size, so a changed image
or a new input size rebuilds it.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..atomic import atomic_path
from ..console import note

CACHE_VERSION = 1


class MissingImagesError(FileNotFoundError):
    """Images listed in the metadata are not on disk."""


class ImageDecodeError(ValueError):
    """An image file exists but cannot be decoded."""


def check_images(image_dir: str | Path, names: Sequence[str]) -> None:
    """Fail before any work starts if images are missing, listing how many and which."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise MissingImagesError(
            f"{image_dir}: image folder not found; put the 11k Hands 'Hands/' folder there "
            "(https://sites.google.com/view/11khands) or set data.images_dir in the profile")
    missing = [n for n in names if not (image_dir / n).is_file()]
    if missing:
        first = ", ".join(missing[:5])
        raise MissingImagesError(f"{len(missing)} of {len(names)} images missing in {image_dir} "
                                 f"(first: {first}); copy the complete 'Hands/' folder there")


def decode_image(path: str | Path, size_hw: tuple[int, int]) -> np.ndarray:
    """JPEG-draft decode then resize to exactly (H, W); returns HxWx3 uint8."""
    h, w = size_hw
    try:
        with Image.open(path) as img:
            img.draft("RGB", (w, h))  # lets libjpeg scale down by 2/4/8 while decoding
            img = img.convert("RGB").resize((w, h), Image.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageDecodeError(f"{path}: cannot decode image ({e}); replace the file with the "
                               "original from the dataset or remove its row") from None


def cache_key(image_dir: str | Path, names: Sequence[str], size_hw: tuple[int, int]) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{size_hw[0]}x{size_hw[1]}".encode())
    image_dir = Path(image_dir)
    for n in names:
        st = os.stat(image_dir / n)
        h.update(f"|{n}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A cached array of the expected shape, or None: absent, or damaged (then said, and rebuilt)."""
    if not path.exists():
        return None
    try:
        arr = np.load(path)
    except (ValueError, OSError, EOFError) as e:
        note(f"{path}: cannot read this decode cache ({type(e).__name__}: cut short or damaged); "
             "decoding the images again to rebuild it")
        return None
    if arr.shape != shape or arr.dtype != np.uint8:
        note(f"{path}: decode cache holds {arr.dtype}{tuple(arr.shape)}, expected uint8{shape}; rebuilding it")
        return None
    return arr


def load_images(image_dir: str | Path, names: Sequence[str], size_hw: tuple[int, int],
                cache_dir: str | Path | None = None, workers: int | None = None) -> torch.Tensor:
    """All `names` as one uint8 tensor (N, 3, H, W), decoded once and cached."""
    check_images(image_dir, names)
    image_dir = Path(image_dir)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{cache_key(image_dir, names, size_hw)}.npy"
        arr = _read_cache(cache_file, (len(names), size_hw[0], size_hw[1], 3))
        if arr is not None:
            return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    arr = np.empty((len(names), size_hw[0], size_hw[1], 3), dtype=np.uint8)

    def work(i: int) -> None:
        arr[i] = decode_image(image_dir / names[i], size_hw)

    # Pillow releases the GIL while decoding and resizing: threads use every core
    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
        list(pool.map(work, range(len(names))))
    if cache_file is not None:
        with atomic_path(cache_file, arr.nbytes) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
