"""Deterministic synthetic people in Market-1501's layout and file-name scheme, for tests and the
`demo_person` profile (no person images are available offline).

A person's IDENTITY is what a re-identification model should learn: skin tone, shirt and trouser
colours, a shirt pattern, a bag. What a CAMERA changes is drawn per camera (background, lighting)
and per image (position, scale, noise), and every identity is seen by several cameras, so the
camera-aware evaluation has same-camera gallery images to remove and cross-camera ones to find.
The gallery also holds pid 0 distractors (never a match) and pid -1 junk (never evaluated), as
Market's does. Every draw comes from a numpy Generator seeded with integers (seed, purpose, ...),
so the same settings give the same files byte for byte. The folder is written under a temporary
name and renamed when complete: an interrupted run leaves nothing that looks finished.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..config import SyntheticPersonCfg

GENERATOR_VERSION = "1"
STAMP = ".synthetic_person.json"
_JPEG_QUALITY = 90


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *[p + 2 for p in parts]])  # pids -1 and 0 stay non-negative


def _colour(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def draw_person(pid: int, camera: int, k: int, size: tuple[int, int], seed: int) -> Image.Image:
    """One image of person `pid` seen by `camera` (its k-th there); pid <= 0 draws a random figure."""
    w, h = size
    look = _rng(seed, 0, pid) if pid > 0 else _rng(seed, 1, pid, camera, k)
    skin, shirt, trousers, bag = (_colour(look, 60, 230), _colour(look), _colour(look), _colour(look))
    striped, has_bag = bool(look.integers(2)), bool(look.integers(2))
    cam = _rng(seed, 2, camera)
    background, light = _colour(cam, 40, 200), float(cam.uniform(0.75, 1.2))
    shot = _rng(seed, 3, pid, camera, k)
    img = Image.new("RGB", (w, h), background)
    d = ImageDraw.Draw(img)
    s = float(shot.uniform(0.8, 1.0))
    cx, top = w / 2 + float(shot.uniform(-0.1, 0.1)) * w, h * (1 - s) / 2
    head, body_w = 0.09 * h * s, 0.42 * w * s
    d.ellipse([cx - head, top, cx + head, top + 2 * head], fill=skin)
    torso = (cx - body_w / 2, top + 2 * head, cx + body_w / 2, top + 0.55 * h * s)
    d.rectangle(torso, fill=shirt)
    if striped:
        for y in np.arange(torso[1], torso[3], 0.05 * h * s)[::2]:
            d.rectangle([torso[0], y, torso[2], y + 0.025 * h * s], fill=trousers)
    d.rectangle([cx - body_w / 2, torso[3], cx - 0.03 * w, top + s * h], fill=trousers)
    d.rectangle([cx + 0.03 * w, torso[3], cx + body_w / 2, top + s * h], fill=trousers)
    if has_bag:
        d.rectangle([torso[2], torso[1] + 0.1 * h * s, torso[2] + 0.15 * w * s, torso[3]], fill=bag)
    pixels = np.asarray(img, dtype=np.float32) * light + shot.normal(0, 8, size=(h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _name(pid: int, camera: int, k: int) -> str:
    return f"{pid:04d}_c{camera}s1_{k * 25 + 1:06d}_00.jpg" if pid >= 0 else f"-1_c{camera}s1_{k * 25 + 1:06d}_00.jpg"


def layout(cfg: SyntheticPersonCfg) -> dict[str, list[tuple[int, int, int]]]:
    """(pid, camera, k) of every image per Market folder. Each identity is seen by 2..n_cameras
    cameras; a test identity's first image on its first camera is a query (and the first on its
    second camera too, when there are >= 2 per camera); everything else of it is gallery."""
    out: dict[str, list[tuple[int, int, int]]] = {"bounding_box_train": [], "query": [], "bounding_box_test": []}
    n_ids = cfg.n_train_ids + cfg.n_test_ids
    for pid in range(1, n_ids + 1):
        rng = _rng(cfg.seed, 4, pid)
        n_cams = int(rng.integers(2, cfg.n_cameras + 1))
        cams = sorted(int(c) for c in rng.choice(np.arange(1, cfg.n_cameras + 1), n_cams, replace=False))
        shots = [(pid, c, k) for c in cams for k in range(cfg.images_per_camera)]
        if pid <= cfg.n_train_ids:
            out["bounding_box_train"] += shots
            continue
        queries = {(pid, cams[0], 0)} | ({(pid, cams[1], 0)} if cfg.images_per_camera >= 2 else set())
        out["query"] += [s for s in shots if s in queries]
        out["bounding_box_test"] += [s for s in shots if s not in queries]
    rng = _rng(cfg.seed, 5)
    for pid, n in ((0, cfg.n_distractors), (-1, cfg.n_junk)):
        out["bounding_box_test"] += [(pid, int(rng.integers(1, cfg.n_cameras + 1)), 100 + i) for i in range(n)]
    return out


def generate_synthetic_person(parent: str | Path, cfg: SyntheticPersonCfg) -> Path:
    """Write the dataset under `parent` (once per settings) and return its folder."""
    params = {**asdict(cfg), "generator": GENERATOR_VERSION}
    text = json.dumps(params, sort_keys=True)
    root = Path(parent) / f"market1501-synthetic-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    if (root / STAMP).exists() and (root / STAMP).read_text() == text:
        return root
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder, shots in layout(cfg).items():
        (tmp / folder).mkdir(parents=True)
        for pid, camera, k in shots:
            buf = io.BytesIO()
            draw_person(pid, camera, k, tuple(cfg.size), cfg.seed).save(buf, "JPEG", quality=_JPEG_QUALITY)
            (tmp / folder / _name(pid, camera, k)).write_bytes(buf.getvalue())
    (tmp / STAMP).write_text(text)
    shutil.rmtree(root, ignore_errors=True)  # an older generator's folder of the same settings
    os.replace(tmp, root)
    return root
