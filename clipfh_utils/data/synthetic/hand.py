"""The hand model: who a synthetic person is (HandIdentity) and how one photo of them varies (Nuisance).

Every random draw comes from a numpy Generator seeded with a sha256 of (purpose, key, seed), never
Python's salted ``hash()``, so the same arguments give the same hand on every run and machine.
"""
from __future__ import annotations

import colorsys
import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SKIN_COLORS: tuple[str, ...] = ("very fair", "fair", "medium", "dark")
_SKIN_BASE: dict[str, tuple[float, float, float]] = {
    "very fair": (236.0, 204.0, 184.0),
    "fair": (224.0, 180.0, 150.0),
    "medium": (190.0, 140.0, 104.0),
    "dark": (118.0, 80.0, 56.0),
}
_SKIN_PROBS = (0.15, 0.35, 0.35, 0.15)
_POLISH = ((200, 20, 45), (230, 80, 140), (120, 30, 110), (60, 20, 40), (240, 120, 100),
           (150, 0, 20), (90, 60, 160))
_METALS = ((212, 175, 55), (196, 198, 206), (183, 110, 80))  # gold, silver, rose gold


# --------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------

def seeded_rng(*parts: object) -> np.random.Generator:
    """A Generator seeded from a sha256 of the parts: stable across runs, processes, machines."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def rgb(values: Sequence[float]) -> tuple[int, int, int]:
    r, g, b = (int(round(min(255.0, max(0.0, float(v))))) for v in values)
    return (r, g, b)


def mix_rgb(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
    return rgb([x + (y - x) * t for x, y in zip(a, b)])


def scale_rgb(a: Sequence[float], f: float) -> tuple[int, int, int]:
    return rgb([x * f for x in a])


# --------------------------------------------------------------------------------------------
# Identity and nuisance
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HandIdentity:
    """Everything that makes a person's hand theirs; shared by all images and aspects of the id.

    Geometry is in canonical hand units (1.0 ~ the frame's shorter side at scale 1) for a RIGHT
    hand seen from the back (dorsal), fingers up, thumb on the left (negative x); knuckle line at
    y = 0, wrist at y = -palm_height. Fingers are ordered thumb, index, middle, ring, little.
    """

    person_id: str
    age: int
    gender: str
    skin_color: str  # the HandInfo label: very fair / fair / medium / dark
    skin_rgb: tuple[int, int, int]
    palm_rgb: tuple[int, int, int]  # lighter palmar tone
    nail_rgb: tuple[int, int, int]
    nail_polish: bool
    palm_width: float
    palm_height: float
    wrist_width: float
    thenar_bulge: float
    finger_lengths: tuple[float, float, float, float, float]
    finger_widths: tuple[float, float, float, float, float]
    finger_angles: tuple[float, float, float, float, float]  # deg; + = away from the thumb
    knuckle_heights: tuple[float, float, float, float]  # index..little base offsets along y
    thumb_position: float  # thumb joint depth below the knuckle line, fraction of palm height
    joint_fractions: tuple[float, float]  # finger joints along the finger, fraction of length
    knuckle_strength: float  # 0..1, darkness/number of dorsal knuckle wrinkles
    moles: tuple[tuple[float, float, float], ...]  # (x, y, radius), dorsal; y > 0: on a finger
    palm_creases: tuple[tuple[float, float, float, float, float, float], ...]  # bezier, palm-relative
    crease_strength: float
    ring_finger: int  # 1..4: finger that carries the ring when the image has an accessory
    ring_rgb: tuple[int, int, int]


def identity_from_id(person_id: str, seed: int = 0) -> HandIdentity:
    """The hand of `person_id`, deterministic from (stripped id, seed) via a sha256-seeded rng."""
    pid = str(person_id).strip()
    rng = seeded_rng("identity", pid, seed)
    gender = "male" if rng.random() < 0.5 else "female"
    age = int(rng.integers(18, 76))
    skin_color = SKIN_COLORS[int(rng.choice(len(SKIN_COLORS), p=_SKIN_PROBS))]
    base = np.array(_SKIN_BASE[skin_color])
    # lightness, warmth and a little per-channel tint: distinct per person, always skin-like
    skin = (base * float(np.exp(rng.normal(0.0, 0.12))) + np.array([1.0, 0.0, -1.0])
            * rng.normal(0.0, 10.0) + np.clip(rng.normal(0.0, 5.0, 3), -10.0, 10.0))
    skin_rgb = rgb(skin)
    palm_rgb = mix_rgb(skin_rgb, (246, 196, 182), 0.15 + 0.35 * rng.random())
    nail_polish = bool(gender == "female" and rng.random() < 0.25)
    if nail_polish:
        nail_rgb = _POLISH[int(rng.integers(len(_POLISH)))]
    else:
        nail_rgb = mix_rgb(skin_rgb, (250, 222, 220), 0.45 + 0.25 * rng.random())

    size = (1.06 if gender == "male" else 0.95) * float(np.exp(rng.normal(0.0, 0.06)))
    palm_width = size * 0.30 * float(np.exp(rng.normal(0.0, 0.09)))
    palm_height = size * 0.33 * float(np.exp(rng.normal(0.0, 0.08)))
    wrist_width = palm_width * float(rng.uniform(0.70, 0.84))
    thenar_bulge = palm_width * float(rng.uniform(0.05, 0.16))
    mean_len = np.array([0.215, 0.265, 0.300, 0.280, 0.220])
    finger_lengths = tuple(float(v) for v in size * mean_len * np.exp(rng.normal(0, 0.11, 5)))
    mean_w = np.array([0.084, 0.066, 0.068, 0.063, 0.054])
    finger_widths = tuple(float(v) for v in
                          mean_w * (palm_width / 0.30) * np.exp(rng.normal(0, 0.07, 5)))
    spread = float(rng.uniform(0.3, 1.6))
    mean_ang = np.array([-48.0, -9.0, 0.0, 7.0, 16.0])
    angles = mean_ang * np.array([0.8 + 0.3 * spread, spread, 1.0, spread, spread])
    finger_angles = tuple(float(v) for v in angles + rng.normal(0, [8.0, 4.0, 3.0, 4.0, 5.0]))
    knuckle_heights = tuple(float(v) for v in
                            np.array([-0.006, 0.006, -0.002, -0.026]) + rng.normal(0, 0.008, 4))
    thumb_position = float(rng.uniform(0.40, 0.66))
    joint_fractions = (float(rng.uniform(0.34, 0.42)), float(rng.uniform(0.64, 0.72)))
    knuckle_strength = float(rng.uniform(0.15, 1.0))
    moles = []
    for _ in range(int(rng.integers(0, 7))):
        if rng.random() < 0.75:  # back of the hand
            x = float(rng.uniform(-0.42, 0.45)) * palm_width
            y = -float(rng.uniform(0.08, 0.9)) * palm_height
        else:  # on a finger: x picks the nearest finger, y = distance from its base
            x = float(rng.uniform(-0.30, 0.40)) * palm_width
            y = float(rng.uniform(0.02, 0.14))
        moles.append((x, y, float(rng.uniform(0.005, 0.015))))
    # palm creases, points as (u, v): u = x / palm_width in [-0.5, 0.5] (thumb side negative),
    # v = depth below the knuckle line / palm_height in [0, 1]
    templates = [
        (0.52, 0.20, 0.12, 0.30, -0.22, 0.07),   # heart line
        (-0.50, 0.33, -0.02, 0.40, 0.36, 0.52),  # head line
        (-0.47, 0.34, -0.02, 0.72, -0.14, 1.02),  # life line
    ]
    if rng.random() < 0.55:
        templates.append((0.02, 1.0, 0.06, 0.65, 0.0, 0.30))  # fate line
    templates = [np.array(t) + rng.normal(0, 0.08, 6) for t in templates]
    for _ in range(int(rng.integers(0, 4))):  # minor creases: short, anywhere on the palm
        u, v = rng.uniform(-0.35, 0.35), rng.uniform(0.2, 0.85)
        a, r = rng.uniform(0, math.pi), rng.uniform(0.08, 0.2)
        du, dv = r * math.cos(a), r * math.sin(a)
        templates.append(np.array([u - du, v - dv, u + rng.normal(0, 0.04), v + rng.normal(0, 0.04),
                                   u + du, v + dv]))
    creases = tuple(tuple(float(v) for v in t) for t in templates)
    ring_finger = 3 if rng.random() < 0.6 else int(rng.integers(1, 5))
    ring_rgb = _METALS[int(rng.integers(len(_METALS)))]
    return HandIdentity(
        person_id=pid, age=age, gender=gender, skin_color=skin_color, skin_rgb=skin_rgb,
        palm_rgb=palm_rgb, nail_rgb=nail_rgb, nail_polish=nail_polish,
        palm_width=palm_width, palm_height=palm_height, wrist_width=wrist_width,
        thenar_bulge=thenar_bulge, finger_lengths=finger_lengths,  # type: ignore[arg-type]
        finger_widths=finger_widths, finger_angles=finger_angles,  # type: ignore[arg-type]
        knuckle_heights=knuckle_heights, thumb_position=thumb_position,  # type: ignore[arg-type]
        joint_fractions=joint_fractions, knuckle_strength=knuckle_strength,
        moles=tuple(moles), palm_creases=creases,  # type: ignore[arg-type]
        crease_strength=float(rng.uniform(0.35, 1.0)), ring_finger=ring_finger, ring_rgb=ring_rgb)


@dataclass(frozen=True)
class Nuisance:
    """What changes from photo to photo of the same hand; must not carry identity.

    translate is (dx, dy) as fractions of the frame's width/height (+y down); rotation is
    counter-clockwise degrees about the frame centre; background_angle_deg is the gradient's
    direction (0 = top to bottom, which is left/right symmetric).
    """

    rotation_deg: float = 0.0
    scale: float = 1.0
    translate: tuple[float, float] = (0.0, 0.0)
    brightness: float = 1.0
    gamma: float = 1.0
    color_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    background_rgb: tuple[int, int, int] = (235, 235, 235)
    background_rgb2: tuple[int, int, int] = (235, 235, 235)
    background_angle_deg: float = 0.0
    finger_jitter_deg: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    shadow_strength: float = 0.0
    noise_std: float = 0.0  # ~std in grey levels (0..255) of per-pixel sensor noise
    noise_seed: int = 0


def nuisance_from_name(image_name: str, seed: int = 0) -> Nuisance:
    """Per-image camera/pose conditions, deterministic from (imageName, seed)."""
    rng = seeded_rng("nuisance", str(image_name).strip(), seed)
    if rng.random() < 0.4:  # the real dataset's near-white paper
        h, s, v = rng.random(), rng.uniform(0.0, 0.08), rng.uniform(0.82, 1.0)
    else:
        h, s, v = rng.random(), rng.uniform(0.0, 0.45), rng.uniform(0.35, 0.98)
    c0 = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
    h2 = (h + rng.normal(0.0, 0.05)) % 1.0
    s2 = float(np.clip(s + rng.normal(0.0, 0.08), 0.0, 1.0))
    v2 = float(np.clip(v + rng.normal(0.0, 0.15), 0.15, 1.0))
    c1 = np.array(colorsys.hsv_to_rgb(h2, s2, v2)) * 255.0
    return Nuisance(
        rotation_deg=float(rng.uniform(-12.0, 12.0)),
        scale=float(rng.uniform(0.95, 1.04)),
        translate=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.04, 0.04))),
        brightness=float(rng.uniform(0.93, 1.06)),
        gamma=float(np.exp(rng.normal(0.0, 0.05))),
        color_cast=tuple(float(v) for v in np.exp(rng.normal(0.0, 0.02, 3))),  # type: ignore[arg-type]
        background_rgb=rgb(c0),
        background_rgb2=rgb(c1),
        background_angle_deg=float(rng.uniform(0.0, 360.0)),
        finger_jitter_deg=tuple(float(v) for v in np.clip(rng.normal(0, 2.0, 5), -5, 5)),  # type: ignore[arg-type]
        shadow_strength=float(rng.uniform(0.0, 0.35)),
        noise_std=float(rng.uniform(1.0, 5.0)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


# --------------------------------------------------------------------------------------------
# Geometry helpers (canonical hand units, y up)
