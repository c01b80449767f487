"""Tests for the synthetic hand generator (clipfh_utils.data.synthetic)."""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipfh_utils.data.synthetic import (ASPECTS, HandIdentity, Nuisance, generate_synthetic_dataset,
                                    identity_from_id, nuisance_from_name, render_hand,
                                    render_images_for_handinfo)

HEADER = "id,age,gender,skinColor,accessories,nailPolish,aspectOfHand,imageName,irregularities"
ROW_RE = re.compile(r'^"\d{7}",\d+,"(male|female)","(very fair|fair|medium|dark)",[01],[01],'
                    r'"(dorsal|palmar) (right|left)","Hand_\d{7}\.jpg",0$')


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "Hands").iterdir())}


def test_same_arguments_give_identical_bytes(tmp_path):
    kw = dict(n_train_ids=3, n_test_ids=3, images_per_id=(2, 3), size=(64, 48), seed=5)
    a = generate_synthetic_dataset(tmp_path / "a", **kw)
    b = generate_synthetic_dataset(tmp_path / "b", **kw)
    assert a.read_bytes() == b.read_bytes()
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and len(fa) == len(_rows(a))
    assert all(fa[k] == fb[k] for k in fa)
    assert not any(name.endswith(".tmp") for name in fa)  # atomic writes leave no temp files
    # a different seed changes the data
    c = generate_synthetic_dataset(tmp_path / "c", **{**kw, "seed": 6})
    assert c.read_bytes() != a.read_bytes()


def test_schema_ids_order_and_files(tmp_path):
    csv_path = generate_synthetic_dataset(tmp_path, n_train_ids=4, n_test_ids=3,
                                          images_per_id=(2, 4), size=(48, 36), seed=1)
    assert csv_path == tmp_path / "HandInfo.csv"
    lines = csv_path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == HEADER and lines[-1] == ""  # "\n" line ends, unquoted header
    for line in lines[1:-1]:
        assert ROW_RE.match(line), line
    rows = _rows(csv_path)
    ids = sorted({r["id"] for r in rows}, key=int)
    assert all(len(i) == 7 and i.isdigit() for i in ids)
    train = [i for i in ids if int(i) <= 1037]
    test = [i for i in ids if int(i) > 1051]
    assert train == [f"{i:07d}" for i in range(4)] and test == [f"{1100 + i:07d}" for i in range(3)]
    for pid in ids:
        per_aspect = {a: sum(1 for r in rows if r["id"] == pid and r["aspectOfHand"] == a)
                      for a in ASPECTS}
        assert all(2 <= n <= 4 for n in per_aspect.values()), (pid, per_aspect)
        # an identity's labels are the same in every row
        assert len({(r["age"], r["gender"], r["skinColor"], r["nailPolish"])
                    for r in rows if r["id"] == pid}) == 1
    # order: id, then aspect (ASPECTS order), then image; names sequential from 1
    keys = [(int(r["id"]), ASPECTS.index(r["aspectOfHand"])) for r in rows]
    assert keys == sorted(keys)
    assert [r["imageName"] for r in rows] == [f"Hand_{k:07d}.jpg" for k in range(1, len(rows) + 1)]
    for r in rows:
        with Image.open(tmp_path / "Hands" / r["imageName"]) as im:
            assert im.size == (48, 36) and im.mode == "RGB" and im.format == "JPEG"


def test_accessory_rate(tmp_path):
    rows = _rows(generate_synthetic_dataset(tmp_path / "a", n_train_ids=10, n_test_ids=10,
                                            images_per_id=(6, 10), accessory_rate=0.3,
                                            size=(24, 18)))
    acc = [int(r["accessories"]) for r in rows]
    assert set(acc) <= {0, 1} and len(acc) > 400
    assert 0.22 < np.mean(acc) < 0.38
    none = _rows(generate_synthetic_dataset(tmp_path / "b", n_train_ids=2, n_test_ids=2,
                                            images_per_id=(2, 2), accessory_rate=0.0,
                                            size=(24, 18)))
    assert all(r["accessories"] == "0" for r in none)


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_synthetic_dataset(tmp_path, n_train_ids=1039)  # ids must stay <= 1037
    with pytest.raises(ValueError):
        generate_synthetic_dataset(tmp_path, aspects=("dorsal up",))
    with pytest.raises(ValueError):
        generate_synthetic_dataset(tmp_path, images_per_id=(3, 2))
    with pytest.raises(ValueError):
        render_hand(identity_from_id("1"), Nuisance(), "sideways", False)


def test_identity_and_nuisance_are_deterministic():
    assert identity_from_id("0000007") == identity_from_id("0000007")
    assert identity_from_id("1200000 ") == identity_from_id("1200000")
    assert identity_from_id("0000007") != identity_from_id("0000008")
    assert identity_from_id("0000007", seed=1) != identity_from_id("0000007", seed=0)
    assert nuisance_from_name("Hand_0000001.jpg") == nuisance_from_name("Hand_0000001.jpg")
    assert nuisance_from_name("Hand_0000001.jpg") != nuisance_from_name("Hand_0000002.jpg")
    assert isinstance(identity_from_id("1"), HandIdentity)


def test_identity_signal_beats_chance_with_a_colour_descriptor(tmp_path):
    n_ids, per_id = 24, 5
    csv_path = generate_synthetic_dataset(tmp_path, n_train_ids=n_ids, n_test_ids=0,
                                          images_per_id=(per_id, per_id), aspects=("dorsal right",),
                                          accessory_rate=0.0, size=(64, 48))
    rows = _rows(csv_path)
    imgs = np.stack([np.asarray(Image.open(tmp_path / "Hands" / r["imageName"]).convert("RGB")
                                .resize((32, 24), Image.Resampling.BILINEAR), dtype=np.float32)
                     for r in rows])
    labels = np.array([r["id"] for r in rows])
    # nuisance varies: no two images of an id are the same
    first = imgs[labels == labels[0]]
    assert all(np.abs(first[0] - other).mean() > 2.0 for other in first[1:])
    # descriptor: mean colour of the central region (mostly the back of the hand)
    desc = imgs[:, 8:18, 11:21].reshape(len(imgs), -1, 3).mean(axis=1)
    dist = np.linalg.norm(desc[:, None] - desc[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    rank1 = float(np.mean(labels[dist.argmin(axis=1)] == labels))
    chance = (per_id - 1) / (n_ids * per_id - 1)
    assert rank1 > 3 * chance, rank1
    # the same descriptor with shuffled labels is near chance: the signal is the identity's
    shuffled = np.random.default_rng(0).permutation(labels)
    assert float(np.mean(shuffled[dist.argmin(axis=1)] == shuffled)) < rank1


def test_left_is_the_mirror_of_right():
    ident = identity_from_id("0000042")
    nuis = dataclasses.replace(nuisance_from_name("Hand_0000009.jpg"), rotation_deg=0.0,
                               translate=(0.0, 0.0), background_angle_deg=0.0, noise_std=0.0)
    for side in ("dorsal", "palmar"):
        right = np.asarray(render_hand(ident, nuis, f"{side} right", False), dtype=np.float32)
        left = np.asarray(render_hand(ident, nuis, f"{side} left", False), dtype=np.float32)
        assert right.shape == (120, 160, 3)
        mirrored = np.abs(left - right[:, ::-1]).mean()
        assert mirrored < 0.5
        assert np.abs(left - right).mean() > 2.0 + 4 * mirrored  # the thumb really changed sides
    # palmar shows a different surface than dorsal (creases, lighter tone, no nails)
    dorsal = np.asarray(render_hand(ident, nuis, "dorsal right", False), dtype=np.float32)
    palmar = np.asarray(render_hand(ident, nuis, "palmar left", False), dtype=np.float32)
    assert np.abs(dorsal - palmar).mean() > 1.0


def test_accessory_draws_a_ring_and_the_hand_stays_in_frame():
    ident = identity_from_id("0000003")
    nuis = nuisance_from_name("Hand_0000100.jpg")
    plain = np.asarray(render_hand(ident, nuis, "dorsal right", False), dtype=np.float32)
    ring = np.asarray(render_hand(ident, nuis, "dorsal right", True), dtype=np.float32)
    changed = np.abs(plain - ring).max(axis=2) > 20
    assert 5 < changed.sum() < 0.05 * changed.size
    # the frame border is mostly background: the hand (wrist aside) stays inside
    border = np.concatenate([plain[0], plain[:, 0], plain[:, -1]])
    bg = np.asarray(nuis.background_rgb, dtype=np.float32)
    assert np.median(np.abs(border - bg * nuis.brightness).max(axis=1)) < 60


def test_render_sizes_for_every_aspect():
    ident, nuis = identity_from_id("0000001"), nuisance_from_name("Hand_0000001.jpg")
    for aspect in ASPECTS:
        for size in ((160, 120), (64, 48)):
            assert render_hand(ident, nuis, aspect, True, size).size == size


def test_render_images_for_handinfo(tmp_path):
    src = tmp_path / "HandInfo.csv"
    src.write_text(
        HEADER + "\n"
        '"0000000",27,"male","fair",0,0,"dorsal right","Hand_0000002.jpg",0\n'
        '"0000000",27,"male","fair",1,0,"dorsal left","Hand_0000003.jpg",0\n'
        '"0001593",22,"female","medium",0,1,"palmar right","Hand_0000004.jpg",0\n'
        '"1200000 ",23,"male","medium",0,0,"dorsal right","Hand_0009853.jpg",0\n'
        '"1200000",23,"male","medium",0,0,"palmar left","Hand_0009854.jpg",0\n',
        encoding="utf-8")
    out = tmp_path / "imgs"
    assert render_images_for_handinfo(src, out, size=(80, 60)) == 5
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Hand_0000002.jpg", "Hand_0000003.jpg", "Hand_0000004.jpg",
                     "Hand_0009853.jpg", "Hand_0009854.jpg"]
    for n in names:
        with Image.open(out / n) as im:
            assert im.size == (80, 60)
    assert render_images_for_handinfo(src, out, size=(80, 60)) == 0  # skip_existing
    assert render_images_for_handinfo(src, out, size=(80, 60), skip_existing=False, limit=2) == 2
    lim = tmp_path / "lim"
    assert render_images_for_handinfo(src, lim, size=(40, 30), limit=3) == 3

    bad = tmp_path / "NoName.csv"
    bad.write_text('id,age,aspectOfHand,accessories\n"0000000",27,"dorsal right",0\n',
                   encoding="utf-8")
    with pytest.raises(ValueError, match="NoName.csv"):
        render_images_for_handinfo(bad, tmp_path / "x")
    short = tmp_path / "Short.csv"
    short.write_text(HEADER + '\n"0000000",27,"male","fair",0,0,"dorsal right"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"Short\.csv row 2"):
        render_images_for_handinfo(short, tmp_path / "y")


@pytest.mark.slow  # spawned workers import the package afresh: seconds each
def test_worker_processes_render_the_same_bytes_as_this_process(tmp_path):
    """32 rows or more go to spawned worker processes (which import the drawing afresh by module
    path), fewer are drawn in this process: both give the same files, byte for byte."""
    handinfo = Path(__file__).resolve().parents[1] / "data" / "11k" / "HandInfo.csv"
    pool, here = tmp_path / "pool", tmp_path / "here"
    assert render_images_for_handinfo(handinfo, pool, size=(40, 30), seed=2, limit=32) == 32
    names = sorted(p.name for p in pool.iterdir())
    for chunk in (names[:16], names[16:]):
        assert render_images_for_handinfo(handinfo, here, size=(40, 30), seed=2, limit=32, only=chunk) == 16
    assert sorted(p.name for p in here.iterdir()) == names
    assert all((pool / n).read_bytes() == (here / n).read_bytes() for n in names)


def test_stamp_skips_rerendering_until_arguments_change(tmp_path):
    kw = dict(n_train_ids=2, n_test_ids=2, images_per_id=(2, 2), size=(32, 24))
    csv_path = generate_synthetic_dataset(tmp_path, **kw)
    img = tmp_path / "Hands" / "Hand_0000001.jpg"
    old = 1_000_000_000
    for p in (csv_path, img):
        os.utime(p, (old, old))
    generate_synthetic_dataset(tmp_path, **kw)
    assert csv_path.stat().st_mtime == old and img.stat().st_mtime == old
    assert (tmp_path / ".synthetic_params.json").exists()
    before = img.read_bytes()
    generate_synthetic_dataset(tmp_path, **{**kw, "seed": 1})
    assert csv_path.stat().st_mtime != old and img.stat().st_mtime != old
    assert img.read_bytes() != before
