"""Which hand region each pixel of an evaluation image shows, and how much of a map falls there.

Regions (REGION_NAMES): background, fingers, knuckles (the knuckle row and the finger joints),
back of hand / palm, wrist. Synthetic images take them from the generator's own geometry
(`clipfh_utils.data.synthetic.hand_regions`, exact). Real photos get a rough split that needs no
annotation (`photo_regions`): a hand mask (colour distance from the border colour, kept to
skin-coloured pixels where that keeps most of it), the hand's long axis, the wrist as the
narrowest cross-section between the widest one and the arm's end, and fixed proportions along
the axis taken from the generator's average hand. It is coarse by design: the figure compares
models on the same split, and the split's error is the same for every model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.datasets import HandDataset
from ..data.protocol import SplitRow
from ..data.synthetic import (BACKGROUND, FINGERS, KNUCKLES, PALM, REGION_NAMES, STAMP_NAME, WRIST,
                              hand_regions, identity_from_id, nuisance_from_name)

# prepare_dataset renders "11k-rendered" images with render_images_for_handinfo's default seed
RENDER_SEED = 0
# Proportions of the generator's average dorsal hand (middle finger 0.30, palm 0.33 hand units),
# as fractions of the fingertip-to-wrist length D: the knuckle line lies 0.476 D from the tip,
# the knuckle row spans -0.047 D .. +0.073 D around it (tip side first), the two finger joints sit
# 0.38 and 0.68 of the finger's length from the knuckle line, +-0.032 D wide.
_KNUCKLE_LINE, _ROW = 0.476, (0.047, 0.073)
_JOINTS, _JOINT_HALF = (0.38, 0.68), 0.032


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=128)
    p = hist.astype(float) / max(1, hist.sum())
    centres = (edges[:-1] + edges[1:]) / 2
    w0, m0 = np.cumsum(p), np.cumsum(p * centres)
    between = (m0[-1] * w0 - m0) ** 2 / np.clip(w0 * (1 - w0), 1e-12, None)
    return float(centres[int(np.argmax(between))])


def _skin(img: np.ndarray) -> np.ndarray:
    """A broad YCrCb skin-colour rule (Chai & Ngan 1999)."""
    rgb = img.astype(float)
    cr = 128 + 0.5 * rgb[..., 0] - 0.4187 * rgb[..., 1] - 0.0813 * rgb[..., 2]
    cb = 128 - 0.1687 * rgb[..., 0] - 0.3313 * rgb[..., 1] + 0.5 * rgb[..., 2]
    return (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)


def _background(img: np.ndarray) -> np.ndarray:
    """The background as a linear colour gradient fitted to the border pixels (robustly: the
    fit is repeated on the half of the border that fits best, which drops the arm)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    edge = np.zeros((h, w), bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    design = np.stack([np.ones(edge.sum()), xx[edge] / w, yy[edge] / h], 1)
    colours = img[edge].astype(float)
    keep = np.ones(len(design), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], colours[keep], rcond=None)
        err = np.linalg.norm(design @ coef - colours, axis=1)
        keep = err <= np.median(err)
    full = np.stack([np.ones(h * w), xx.ravel() / w, yy.ravel() / h], 1)
    return (full @ coef).reshape(h, w, 3)


def hand_mask(img: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of the hand in an HxWx3 uint8 photo of a hand on a plain background."""
    from scipy import ndimage
    dist = np.linalg.norm(img.astype(float) - _background(img), axis=-1)
    fg = dist > _otsu(dist)
    skin = fg & _skin(img)
    if skin.sum() >= 0.5 * fg.sum():
        fg = skin
    fg = ndimage.binary_opening(fg, iterations=1)
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    fg = lab == (1 + int(np.argmax(ndimage.sum(fg, lab, range(1, n + 1)))))
    return ndimage.binary_fill_holes(fg)


def photo_regions(img: np.ndarray) -> np.ndarray:
    """(H, W) uint8 region codes of a hand photo from a hand mask plus position (no annotation)."""
    h, w = img.shape[:2]
    fg = hand_mask(img)
    labels = np.full((h, w), BACKGROUND, dtype=np.uint8)
    ys, xs = np.nonzero(fg)
    if len(ys) < 20:
        return labels
    pts = np.stack([xs, ys], 1).astype(float)
    centre = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
    axis = vt[0]
    t = (pts - centre) @ axis
    # the arm leaves the frame: the end whose outermost pixels lie on the image border is the wrist's
    on_border = (xs == 0) | (ys == 0) | (xs == w - 1) | (ys == h - 1)
    span = t.max() - t.min()
    near_hi, near_lo = t > t.max() - 0.15 * span, t < t.min() + 0.15 * span
    if (on_border & near_lo).sum() > (on_border & near_hi).sum():
        t, axis = -t, -axis
    tip = t.min()
    bins = np.linspace(tip, t.max(), 41)
    width = np.histogram(t, bins)[0].astype(float)
    cut = np.histogram(t[on_border], bins)[0] > 0      # cross-sections the frame cuts off
    widest = int(np.argmax(np.where(cut, -1, width)))
    search = np.where(cut, np.inf, width)[widest + 1:]
    wrist_bin = widest + 1 + int(np.argmin(search)) if np.isfinite(search).any() else len(width) - 1
    d = max(bins[wrist_bin + 1] - tip, 1e-6)
    u = (t - tip) / d                                   # 0 at the fingertip, 1 at the wrist
    knuckle = _KNUCKLE_LINE
    region = np.full(len(u), PALM, dtype=np.uint8)
    region[u < knuckle - _ROW[0]] = FINGERS
    joints = np.zeros(len(u), bool)
    for f in _JOINTS:
        joints |= np.abs(u - (knuckle - f * knuckle)) < _JOINT_HALF
    region[joints & (u < knuckle)] = KNUCKLES
    region[(u >= knuckle - _ROW[0]) & (u <= knuckle + _ROW[1])] = KNUCKLES
    region[u > 1] = WRIST
    labels[ys, xs] = region
    return labels


def _synthetic_seed(ds: HandDataset) -> int:
    if ds.kind == "11k-rendered":
        return RENDER_SEED
    stamp = Path(ds.images_dir).parent / STAMP_NAME
    return int(json.loads(stamp.read_text())["seed"])


def dataset_regions(ds: HandDataset, rows: list[SplitRow], images: torch.Tensor) -> np.ndarray:
    """(N, H, W) region codes of `rows`, at the size of their evaluation `images` (uint8, N,3,H,W):
    the generator's geometry for synthetic data (squashed like the images), `photo_regions` else."""
    size_hw = tuple(images.shape[2:])
    out = np.empty((len(rows), *size_hw), dtype=np.uint8)
    if ds.is_real:
        for i, img in enumerate(images):
            out[i] = photo_regions(img.permute(1, 2, 0).numpy())
        return out
    seed = _synthetic_seed(ds)
    for i, r in enumerate(rows):
        with Image.open(Path(ds.images_dir) / r.image_name) as im:
            size = im.size
        lab = hand_regions(identity_from_id(r.person_id, seed), nuisance_from_name(r.image_name, seed),
                           r.aspect, size)
        out[i] = np.asarray(Image.fromarray(lab).resize(size_hw[::-1], Image.Resampling.NEAREST))
    return out


def region_shares(maps: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """(N, R) share of each map's mass per region (rows sum to 1; NaN for an all-zero map).

    Maps (N, h, w) at any resolution are upsampled bilinearly to the label maps (N, H, W)."""
    m = maps.float()
    if tuple(m.shape[1:]) != labels.shape[1:]:
        m = F.interpolate(m[:, None], size=labels.shape[1:], mode="bilinear", align_corners=False)[:, 0]
    m = m.clamp(min=0).numpy()
    onehot = np.stack([labels == r for r in range(len(REGION_NAMES))], 1)    # (N, R, H, W)
    mass = (onehot * m[:, None]).sum((2, 3))
    total = mass.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, mass / total, np.nan)


def area_shares(labels: np.ndarray) -> np.ndarray:
    """(N, R) share of the image area per region: what a uniform map would give."""
    return np.stack([(labels == r).mean((1, 2)) for r in range(len(REGION_NAMES))], 1)
