"""Dataset writers: synthetic hands as files in the 11k Hands and HD layouts, or rendered for the rows
of an existing HandInfo.csv. Same arguments -> byte-identical files (no EXIF, fixed JPEG settings)."""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Collection, Sequence

from PIL import Image

from ...atomic import atomic_write_bytes
from ...config import ASPECTS
from ..handinfo import ALL_COLUMNS as HANDINFO_COLUMNS
from ..handinfo import load_handinfo
from .drawing import render_hand
from .geometry import check_size, parse_aspect
from .hand import HandIdentity, identity_from_id, nuisance_from_name, seeded_rng

# Bump whenever the drawing or the sampling changes: it invalidates generated datasets' stamps.
GENERATOR_VERSION = "1"
STAMP_NAME = ".synthetic_params.json"
_JPEG_QUALITY_RENDER = 92


def _encode(img: Image.Image, name: str, quality: int) -> bytes:
    buf = io.BytesIO()
    suffix = Path(name).suffix.lower()
    if suffix in (".png",):
        img.save(buf, format="PNG")
    else:  # no EXIF, no optimize/progressive: same pixels + quality -> same bytes
        img.save(buf, format="JPEG", quality=int(quality), optimize=False, subsampling=2)
    return buf.getvalue()


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def generate_synthetic_dataset(out_dir: str | Path, n_train_ids: int = 24, n_test_ids: int = 24,
                               images_per_id: tuple[int, int] = (6, 10),
                               aspects: Sequence[str] = ASPECTS, accessory_rate: float = 0.1,
                               size: tuple[int, int] = (160, 120), seed: int = 0,
                               jpeg_quality: int = 92) -> Path:
    """Write ``out_dir/Hands/Hand_XXXXXXX.jpg`` and ``out_dir/HandInfo.csv``; return the csv path.

    Training-side ids are ``f"{i:07d}"`` (i < n_train_ids <= 1038, below every protocol id
    threshold), test-side ids ``f"{1100 + i:07d}"``. Each (id, aspect) gets a seeded number of
    images in ``images_per_id`` (inclusive); each image is an accessory with probability
    ``accessory_rate``. Rows are ordered by id, aspect, image; names run from Hand_0000001.jpg.
    Same arguments -> byte-identical csv and JPEGs. A stamp file (``.synthetic_params.json``)
    lets a repeated call with the same arguments return at once without re-rendering.
    """
    out_dir = Path(out_dir)
    w, h = check_size(size)
    lo, hi = (int(v) for v in images_per_id)
    if lo < 1 or hi < lo:
        raise ValueError(f"images_per_id must be (lo, hi) with 1 <= lo <= hi, got {images_per_id!r}")
    if not 0 <= int(n_train_ids) <= 1038:
        raise ValueError(f"n_train_ids must be in 0..1038 so every training id stays <= 1037, "
                         f"got {n_train_ids}")
    if not 0 <= int(n_test_ids) <= 9_998_000:
        raise ValueError(f"n_test_ids must be in 0..9998000, got {n_test_ids}")
    aspects = [str(a).strip().lower() for a in aspects]
    for a in aspects:
        parse_aspect(a)
    if len(set(aspects)) != len(aspects) or not aspects:
        raise ValueError(f"aspects must be a non-empty list without repeats, got {aspects!r}")
    if not 0.0 <= float(accessory_rate) <= 1.0:
        raise ValueError(f"accessory_rate must be in [0, 1], got {accessory_rate}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")

    params = {
        "generator_version": GENERATOR_VERSION, "n_train_ids": int(n_train_ids),
        "n_test_ids": int(n_test_ids), "images_per_id": [lo, hi], "aspects": aspects,
        "accessory_rate": float(accessory_rate), "size": [w, h], "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
    }
    csv_path = out_dir / "HandInfo.csv"
    if csv_path.exists() and _stamp_matches(out_dir, params):
        return csv_path
    hands_dir = out_dir / "Hands"
    hands_dir.mkdir(parents=True, exist_ok=True)

    ids = [f"{i:07d}" for i in range(int(n_train_ids))]
    ids += [f"{1100 + i:07d}" for i in range(int(n_test_ids))]
    rows: list[list[object]] = []
    jobs: list[tuple[HandIdentity, str, str, bool]] = []
    counter = 0
    for pid in ids:
        ident = identity_from_id(pid, seed)
        for aspect in aspects:
            n_img = int(seeded_rng("count", pid, aspect, seed).integers(lo, hi + 1))
            acc_draws = seeded_rng("accessory", pid, aspect, seed).random(n_img)
            for j in range(n_img):
                counter += 1
                name = f"Hand_{counter:07d}.jpg"
                acc = bool(acc_draws[j] < accessory_rate)
                rows.append([pid, ident.age, ident.gender, ident.skin_color, int(acc),
                             int(ident.nail_polish), aspect, name, 0])
                jobs.append((ident, name, aspect, acc))

    _render_all(hands_dir, [(ident, name, name, aspect, acc) for ident, name, aspect, acc in jobs],
                (w, h), seed, jpeg_quality)
    buf = io.StringIO()
    buf.write(",".join(HANDINFO_COLUMNS) + "\n")  # the real header is unquoted
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerows(rows)
    atomic_write_bytes(csv_path, buf.getvalue().encode("utf-8"))
    _write_stamp(out_dir, params)
    return csv_path


def _stamp_matches(out_dir: Path, params: dict) -> bool:
    """True when the folder was generated with exactly `params`; otherwise the old stamp is
    removed first, since the folder is about to change and must not be vouched for."""
    stamp = out_dir / STAMP_NAME
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) == params:
            return True
    except (OSError, ValueError):
        pass
    stamp.unlink(missing_ok=True)
    return False


def _write_stamp(out_dir: Path, params: dict) -> None:
    atomic_write_bytes(out_dir / STAMP_NAME, (json.dumps(params, indent=2, sort_keys=True) + "\n").encode())


def _render_all(root: Path, jobs: list[tuple[HandIdentity, str, str, str, bool]], size: tuple[int, int],
                seed: int, jpeg_quality: int) -> None:
    """Render (identity, file path under root, nuisance key, aspect, accessory) jobs in threads."""
    def work(job: tuple[HandIdentity, str, str, str, bool]) -> None:
        ident, rel, key, aspect, acc = job
        img = render_hand(ident, nuisance_from_name(key, seed), aspect, acc, size)
        atomic_write_bytes(root / rel, _encode(img, rel, jpeg_quality))

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for _ in pool.map(work, jobs):
            pass


HD_ORIGINAL = "Original Images"


def generate_synthetic_hd(out_dir: str | Path, n_ids: int = 40, n_extra_ids: int = 10,
                          images_per_id: tuple[int, int] = (4, 6), size: tuple[int, int] = (160, 120),
                          seed: int = 0, jpeg_quality: int = 92) -> Path:
    """Synthetic hands in the HD layout; returns the ``HD`` folder.

    Writes ``out_dir/HD/Original Images/1-<n_ids>/<id>_<k>.jpg`` (the main subjects) and
    ``<n_ids+1>-<n_ids+n_extra_ids>/`` (the extra subjects, distractors), k = 1..count, the
    naming of the real dataset. Every image is a dorsal view of a right hand without accessories.
    HD subjects are other people than the synthetic 11k ones (identities drawn from "hd-<id>").
    Same arguments -> byte-identical files; a stamp makes a repeated call return at once.
    """
    out_dir = Path(out_dir)
    w, h = check_size(size)
    lo, hi = (int(v) for v in images_per_id)
    if lo < 1 or hi < lo:
        raise ValueError(f"images_per_id must be (lo, hi) with 1 <= lo <= hi, got {images_per_id!r}")
    if n_ids < 1 or n_extra_ids < 1:
        raise ValueError(f"n_ids and n_extra_ids must be >= 1, got {n_ids}, {n_extra_ids}")
    params = {"generator_version": GENERATOR_VERSION, "layout": "HD", "n_ids": int(n_ids),
              "n_extra_ids": int(n_extra_ids), "images_per_id": [lo, hi], "size": [w, h],
              "seed": int(seed), "jpeg_quality": int(jpeg_quality)}
    hd = out_dir / "HD"
    if _stamp_matches(out_dir, params):
        return hd
    folders = {f"1-{n_ids}": range(1, n_ids + 1),
               f"{n_ids + 1}-{n_ids + n_extra_ids}": range(n_ids + 1, n_ids + n_extra_ids + 1)}
    jobs = []
    for folder, ids in folders.items():
        (hd / HD_ORIGINAL / folder).mkdir(parents=True, exist_ok=True)
        for i in ids:
            ident = identity_from_id(f"hd-{i}", seed)
            n_img = int(seeded_rng("hd-count", i, seed).integers(lo, hi + 1))
            for k in range(1, n_img + 1):
                rel = f"{HD_ORIGINAL}/{folder}/{i}_{k}.jpg"
                jobs.append((ident, rel, f"hd/{i}_{k}", "dorsal right", False))
    _render_all(hd, jobs, (w, h), seed, jpeg_quality)
    _write_stamp(out_dir, params)
    return hd


def render_images_for_handinfo(handinfo_csv: str | Path, images_dir: str | Path,
                               size: tuple[int, int] = (1600, 1200), seed: int = 0,
                               limit: int | None = None, skip_existing: bool = True,
                               only: Collection[str] | None = None) -> int:
    """Render a synthetic image for each row of an existing HandInfo.csv (e.g. the real one).

    Lets the full-size pipeline be exercised and timed without the real photos. Ids are stripped
    (the real file has "1200000 "). `limit` caps the number of CSV rows considered (first rows
    first, skipped existing files included); `only` restricts to these imageNames; returns the
    number of images written.
    """
    w, h = check_size(size)
    out = Path(images_dir)
    records = load_handinfo(handinfo_csv, check_sha256=False)[:limit]
    if only is not None:
        wanted = set(only)
        records = [r for r in records if r.image_name in wanted]
    for r in records:
        if Path(r.image_name).name != r.image_name or r.image_name in (".", ".."):
            raise ValueError(f"{handinfo_csv}: imageName {r.image_name!r} must be a plain file name")
    jobs = [(r.person_id, r.image_name, r.aspect, bool(r.accessories)) for r in records]
    out.mkdir(parents=True, exist_ok=True)
    if skip_existing:
        jobs = [j for j in jobs if not (out / j[1]).exists()]

    # drawing holds the GIL: full-size renders go to worker processes ("spawn": safe next to CUDA)
    args = [(pid, name, aspect, acc, w, h, seed, str(out)) for pid, name, aspect, acc in jobs]
    if len(args) < 32:
        for a in args:
            _render_row(a)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=ctx) as pool:
            for _ in pool.map(_render_row, args, chunksize=8):
                pass
    return len(jobs)


def _render_row(job: tuple) -> None:
    pid, name, aspect, acc, w, h, seed, out = job
    img = render_hand(identity_from_id(pid, seed), nuisance_from_name(name, seed), aspect, acc, (w, h))
    atomic_write_bytes(Path(out) / name, _encode(img, name, _JPEG_QUALITY_RENDER))

