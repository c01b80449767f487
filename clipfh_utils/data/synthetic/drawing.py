"""Drawing one photo of a hand: shapes on a supersampled canvas, then background, light and noise."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .geometry import SUPERSAMPLE, bezier, check_size, direction, layout, superellipse
from .hand import HandIdentity, Nuisance, mix_rgb, scale_rgb


def render_hand(identity: HandIdentity, nuisance: Nuisance, aspect: str, accessory: bool,
                size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Draw one photo of `identity`'s hand as an RGB image of `size` = (width, height).

    Shapes are drawn with ImageDraw on a 2x canvas and downsampled with LANCZOS (smooth edges,
    fast); the hand is composited premultiplied over the per-image background, then lighting and
    noise are applied to the whole frame like a camera would. "left" is the mirror of "right" and
    "palmar" the mirror of "dorsal" (the thumb changes side), so dorsal left == flipped dorsal right.
    """
    w, h = check_size(size)
    W, H = w * SUPERSAMPLE, h * SUPERSAMPLE
    palmar, mp, fingers, parts = layout(identity, nuisance, aspect, W, H)
    thumb = fingers[0]
    colour = Image.new("RGB", (W, H), (0, 0, 0))
    mask = Image.new("L", (W, H), 0)
    dc, dm = ImageDraw.Draw(colour), ImageDraw.Draw(mask)

    skin = identity.palm_rgb if palmar else identity.skin_rgb
    edge = scale_rgb(identity.skin_rgb, 0.72 if palmar else 0.68)
    outline_px = max(1, int(round(mp.length(0.0045))))
    mapped = [mp(p) for p in parts]
    for poly in mapped:  # darker silhouette rim: separates touching fingers, looks shaded
        dc.polygon(poly, fill=edge, outline=edge, width=outline_px)
        dm.polygon(poly, fill=255, outline=255, width=outline_px)
    for poly in mapped:
        dc.polygon(poly, fill=skin)
    pw, ph = identity.palm_width, identity.palm_height

    line_px = max(1, int(round(mp.length(0.0035))))
    jf = identity.joint_fractions
    if palmar:
        crease = mix_rgb(identity.palm_rgb, scale_rgb(identity.skin_rgb, 0.5),
                      0.55 + 0.45 * identity.crease_strength)
        crease_px = max(2, int(round(mp.length(0.005 + 0.006 * identity.crease_strength))))
        for c in identity.palm_creases:
            pts = [np.array([c[0] * pw, -c[1] * ph]), np.array([c[2] * pw, -c[3] * ph]),
                   np.array([c[4] * pw, -c[5] * ph])]
            dc.line(mp(bezier(*pts)), fill=crease, width=crease_px, joint="curve")
        for f in fingers:  # flexion creases across each finger at its joints
            d, n = direction(f.angle)
            fracs = (0.5,) if f is thumb else (0.04, jf[0], jf[1])
            for t in fracs:
                c0 = f.base + d * (t * f.length)
                seg = np.array([c0 - n * f.width * 0.42, c0 + n * f.width * 0.42])
                dc.line(mp(seg), fill=crease, width=line_px)
        wrist = np.array([[-identity.wrist_width * 0.45, -ph - 0.02],
                          [0.0, -ph - 0.03], [identity.wrist_width * 0.45, -ph - 0.02]])
        dc.line(mp(wrist), fill=crease, width=line_px, joint="curve")
    else:
        wrinkle = mix_rgb(identity.skin_rgb, scale_rgb(identity.skin_rgb, 0.55),
                       0.35 + 0.6 * identity.knuckle_strength)
        n_lines = 2 if identity.knuckle_strength < 0.55 else 3
        for f in fingers:
            d, n = direction(f.angle)
            fracs = (0.48,) if f is thumb else jf
            for t in fracs:
                for k in range(n_lines):
                    c0 = f.base + d * (t * f.length + (k - (n_lines - 1) / 2.0) * 0.011)
                    arc = bezier(c0 - n * f.width * 0.28, c0 + d * 0.006, c0 + n * f.width * 0.28, 5)
                    dc.line(mp(arc), fill=wrinkle, width=line_px, joint="curve")
            # nail at the tip
            tip_w = f.width * 0.86
            nail_len = f.length * (0.20 if f is thumb else 0.15)
            centre = f.base + d * (f.length - tip_w * 0.12 - nail_len / 2.0)
            nail = mp(superellipse(centre, f.angle, nail_len / 2.0, tip_w * 0.36, n=16, p=3.0))
            dc.polygon(nail, fill=identity.nail_rgb, outline=scale_rgb(identity.nail_rgb, 0.8))
        mole = scale_rgb(identity.skin_rgb, 0.42)
        for (mx, my, r) in identity.moles:
            if my > 0:  # on a finger: follow the nearest finger's direction
                f = min(fingers[1:], key=lambda fi: abs(fi.base[0] - mx))
                d, n = direction(f.angle)
                side = float(np.clip(mx - f.base[0], -0.3 * f.width, 0.3 * f.width))
                p = f.base + d * my + n * side
            else:
                p = np.array([mx, my])
            (px, py), rr = mp(p)[0], max(0.8, mp.length(r))
            dc.ellipse([px - rr, py - rr, px + rr, py + rr], fill=mole)

    if accessory:
        f = fingers[max(1, min(4, identity.ring_finger))]
        d, n = direction(f.angle)
        centre = f.base + d * (0.2 * f.length)
        band = mp(superellipse(centre, f.angle, 0.014, f.width * 0.56, n=20, p=6.0))
        metal = identity.ring_rgb
        dc.polygon(band, fill=metal, outline=scale_rgb(metal, 0.6), width=outline_px)
        dm.polygon(band, fill=255, outline=255, width=outline_px)
        shine = np.array([centre + n * f.width * 0.4 + d * 0.004, centre - n * f.width * 0.4 + d * 0.004])
        dc.line(mp(shine), fill=mix_rgb(metal, (255, 255, 255), 0.6), width=line_px)

    colour = colour.resize((w, h), Image.Resampling.LANCZOS)
    mask = mask.resize((w, h), Image.Resampling.LANCZOS)
    return _finish(colour, mask, nuisance, w, h)



def _finish(colour: Image.Image, mask: Image.Image, nuis: Nuisance, w: int, h: int) -> Image.Image:
    """Background, hand shadow, premultiplied composite, lighting, noise -> uint8 RGB image."""
    alpha = np.asarray(mask, dtype=np.float32) * np.float32(1.0 / 255.0)
    # premultiplied colour never exceeds coverage: clips details drawn past the silhouette
    img = np.asarray(colour, dtype=np.float32)
    np.minimum(img, (alpha * np.float32(255.0))[..., None], out=img)
    # background gradient along the nuisance angle (0 deg = top -> bottom)
    a = math.radians(nuis.background_angle_deg)
    xs = (np.arange(w, dtype=np.float32) - (w - 1) / 2.0) / max(w, h)
    ys = (np.arange(h, dtype=np.float32) - (h - 1) / 2.0) / max(w, h)
    t = np.clip(np.float32(0.5) + ys[:, None] * np.float32(math.cos(a))
                + xs[None, :] * np.float32(math.sin(a)), 0.0, 1.0)
    c0 = np.asarray(nuis.background_rgb, dtype=np.float32)
    c1 = np.asarray(nuis.background_rgb2, dtype=np.float32)
    bg_weight = np.float32(1.0) - alpha
    if nuis.shadow_strength > 0:
        # a soft shadow straight below the hand (vertical offset keeps left/right symmetry)
        small = mask.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.BILINEAR)
        soft = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        dy = max(1, int(round(0.02 * h)))
        shade = np.ones_like(soft)
        shade[dy:] -= soft[:-dy] * np.float32(nuis.shadow_strength / 255.0)
        bg_weight *= shade
    bg = t[..., None] * (c1 - c0)
    bg += c0
    bg *= bg_weight[..., None]
    img += bg
    img += np.float32(0.5)
    q = img.astype(np.uint8)  # 0 <= img <= 255.5 by construction
    # camera: per-channel LUT for brightness, gamma and colour cast (fast in PIL)
    levels = np.arange(256, dtype=np.float64) / 255.0
    lut = np.concatenate([np.clip(255.0 * nuis.brightness * c * levels ** nuis.gamma + 0.5, 0, 255)
                          for c in nuis.color_cast]).astype(np.int64)
    out = Image.fromarray(q, "RGB").point(lut.tolist())
    if nuis.noise_std <= 0:
        return out
    # mild sensor noise: triangular integer noise (sum of two uniforms), std ~= noise_std
    k = max(1, int(round(math.sqrt(0.25 + 1.5 * nuis.noise_std ** 2) - 0.5)))
    noise_rng = np.random.default_rng(nuis.noise_seed)
    noise = noise_rng.integers(-k, k + 1, (h, w, 3), dtype=np.int16)
    noise += noise_rng.integers(-k, k + 1, (h, w, 3), dtype=np.int16)
    arr = np.asarray(out, dtype=np.int16) + noise
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------
# Files
