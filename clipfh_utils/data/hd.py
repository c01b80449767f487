"""The HD dataset (PolyU hand dorsal) as its users have it on disk, and its evaluation protocol.

Layout (MBA-Net's README and `prepare_train_val_test_hd.py`):

    HD/Original Images/1-501/<id>_<k>.jpg      the main subjects, split into training and test ids
    HD/Original Images/502-712/<id>_<k>.jpg    the extra subjects: distractors in every gallery

There is no metadata file: the folder listing is the metadata. It is checked (a missing or
incomplete folder is a one-line error naming the folder and the fix), and the seeded split lists
are generated from it on first use and written in the same split-file format as 11k Hands, with
the counts found printed and recorded beside them (`hd_listing.json`). Same listing + seed +
threshold -> the same lists, byte for byte.

Protocol (the 11k scheme applied to HD): main ids <= `hd_id_threshold` train, one seeded
validation image per training id; for each of the N seeded splits one gallery image per test id,
every other test image a query. The threshold is a config key because MBA-Net's script disagrees
with itself: its comments say first/last 251 ids, its code keeps ids <= 447 for training; the
default (447) follows the code.

The two protocol names mean, for HD:
- `clipfh`: the test ids' gallery only, standard AP;
- `mbanet`: `gallery_all` = that gallery plus ALL images of the extra subjects as never-matching
  distractors (labels offset by 10,000,000), trapezoid AP. MBA-Net's HD numbers use distractors.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder, atomic_write_json
from ..config import HD_ASPECT, ConfigError, display_path
from ..provenance import files_digest
from .datasets import HandDataset
from .protocol import Protocol, SplitRow, read_split_files, split_dir, write_split_files

ORIGINAL = "Original Images"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
DISTRACTOR_OFFSET = 10_000_000   # extra subjects' labels: never equal to a test id
RNG_STREAM = 100                 # numpy seed component of HD draws (the 11k aspects use 0..3)
LISTING_FILE = "hd_listing.json"
_RANGE = re.compile(r"^(\d+)-(\d+)$")
_NAME = re.compile(r"^(\d+)_(\d+)$")


# notebook 00's section on HD (shown only when a profile has it)
ABOUT = """## HD (PolyU hand dorsal)

No metadata file: the split lists come from the folder listing (`HD/Original Images/1-501/<id>_<k>.jpg`,
extra subjects in `502-712/`), seeded, written on first use with the counts found. Training ids are
`id <= data.hd_id_threshold`. MBA-Net's `prepare_train_val_test_hd.py` disagrees with itself here: its
comments say the first/last **251** ids, its code keeps ids **<= 447** for training. The default
(447) follows the code; `-p data.hd_id_threshold=251` gives the commented split. Every image of the
extra subjects is a never-matching distractor in every `gallery_all`."""


class HDLayoutError(FileNotFoundError):
    """The HD folder is missing, incomplete or not in the layout of the dataset."""


@dataclass(frozen=True)
class HdImage:
    name: str        # relative to "Original Images": "1-501/12_3.jpg"
    person_id: str   # the id without zero padding: "12"
    k: int           # the image number of the file name

    @property
    def id_int(self) -> int:
        return int(self.person_id)


@dataclass
class HdListing:
    """What the folder holds: the main subjects and the extra (distractor) subjects."""
    root: Path                                # HD/Original Images
    main_folder: str                          # "1-501"
    extra_folder: str                         # "502-712"
    main: list[HdImage] = field(default_factory=list)
    extra: list[HdImage] = field(default_factory=list)

    def sha256(self) -> str:
        """Digest of the file names: a changed folder gives new split lists."""
        names = "\n".join(im.name for im in self.main + self.extra)
        return hashlib.sha256(names.encode()).hexdigest()

    def counts(self, threshold: int) -> dict[str, int]:
        ids = {im.person_id for im in self.main}
        train = {i for i in ids if int(i) <= threshold}
        return {"main_ids": len(ids), "main_images": len(self.main),
                "train_ids": len(train), "images_of_train_ids": sum(im.person_id in train for im in self.main),
                "test_ids": len(ids - train), "images_of_test_ids": sum(im.person_id not in train for im in self.main),
                "extra_ids": len({im.person_id for im in self.extra}), "extra_images": len(self.extra)}


def _range_folders(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for d in sorted(root.iterdir()):
        m = _RANGE.match(d.name)
        if d.is_dir() and m:
            out[d.name] = (int(m.group(1)), int(m.group(2)))
    return out


def _images(folder: Path) -> list[HdImage]:
    found = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.suffix.lower() not in IMAGE_SUFFIXES:
            continue  # Thumbs.db, .DS_Store, notes
        m = _NAME.match(f.stem)
        if not m:
            raise HDLayoutError(f"{f}: not named <id>_<k>{f.suffix} like the HD images; "
                                "rename or remove it")
        found.append(HdImage(f"{folder.name}/{f.name}", str(int(m.group(1))), int(m.group(2))))
    return sorted(found, key=lambda im: (im.id_int, im.k, im.name))


def scan_hd(hd_dir: str | Path) -> HdListing:
    """The HD folder's listing, checked: both range folders, every main id present, names parse."""
    hd_dir = Path(hd_dir)
    root = hd_dir / ORIGINAL
    fix = (f"put the HD dataset there so that '{root}/1-501' and '{root}/502-712' exist "
           "(MBA-Net's README has the link), or set data.hd_dir in the profile")
    if not root.is_dir():
        raise HDLayoutError(f"{root}: HD image folder not found; {fix}")
    folders = _range_folders(root)
    mains = [n for n, (lo, _) in folders.items() if lo == 1]
    extras = [n for n, (lo, _) in folders.items() if lo > 1]
    if len(mains) != 1 or len(extras) != 1:
        raise HDLayoutError(f"{root}: expected two folders, the main subjects '1-<n>' and the extra "
                            f"subjects '<n+1>-<m>', found {sorted(folders) or 'none'}; {fix}")
    listing = HdListing(root, mains[0], extras[0], _images(root / mains[0]),
                        _images(root / extras[0]))
    lo, hi = folders[mains[0]]
    present = {im.id_int for im in listing.main}
    missing = [i for i in range(lo, hi + 1) if i not in present]
    if missing:
        raise HDLayoutError(f"{root / mains[0]}: no images of {len(missing)} of its {hi - lo + 1} subjects "
                            f"(first: {', '.join(map(str, missing[:5]))}); copy the complete HD folder")
    stray = sorted({im.id_int for im in listing.main if not lo <= im.id_int <= hi}
                   | {im.id_int for im in listing.extra if im.id_int <= hi})
    if stray:
        raise HDLayoutError(f"{root}: ids {stray[:5]} are in the wrong range folder; "
                            "restore the dataset's own layout")
    if not listing.extra:
        raise HDLayoutError(f"{root / extras[0]}: no images of the extra subjects; copy the complete HD folder")
    return listing


# --------------------------------------------------------------------------- protocol

def _row(im: HdImage, offset: int = 0) -> SplitRow:
    return SplitRow(im.name, im.person_id, HD_ASPECT, im.id_int + offset)


def _by_id(images: list[HdImage]) -> dict[str, list[HdImage]]:
    groups: dict[str, list[HdImage]] = defaultdict(list)
    for im in images:
        groups[im.person_id].append(im)
    return dict(sorted(groups.items(), key=lambda kv: int(kv[0])))


def build_hd_protocol(listing: HdListing, threshold: int, seed: int = 0, n_splits: int = 10) -> Protocol:
    """Training/validation/test and the N query/gallery draws, with the extras as distractors."""
    train_pool = [im for im in listing.main if im.id_int <= threshold]
    test = [im for im in listing.main if im.id_int > threshold]
    if not train_pool or not test:
        n = len({im.person_id for im in listing.main})
        raise ConfigError(f"data.hd_id_threshold = {threshold} leaves {len(_by_id(train_pool))} training and "
                          f"{len(_by_id(test))} test subjects of the {n} in {listing.main_folder}; "
                          f"set it between 1 and {n - 1}")
    rng = np.random.default_rng([seed, 0, RNG_STREAM])
    train, val = [], []
    for imgs in _by_id(train_pool).values():
        pick = int(rng.integers(len(imgs)))
        val.append(_row(imgs[pick]))
        train.extend(_row(im) for j, im in enumerate(imgs) if j != pick)
    proto = Protocol(HD_ASPECT, seed, train, val, [_row(im) for im in test])
    distractors = [_row(im, DISTRACTOR_OFFSET) for im in listing.extra]
    for i in range(n_splits):
        rng = np.random.default_rng([seed, 1, RNG_STREAM, i])
        queries, gallery = [], []
        for imgs in _by_id(test).values():
            pick = int(rng.integers(len(imgs)))
            gallery.append(_row(imgs[pick]))
            queries.extend(_row(im) for j, im in enumerate(imgs) if j != pick)
        proto.queries.append(queries)
        proto.galleries.append(gallery)
        proto.galleries_all.append(gallery + distractors)
    return proto


def _listing_record(listing: HdListing, threshold: int, seed: int, n_splits: int) -> dict:
    return {"listing_sha256": listing.sha256(), "hd_id_threshold": threshold, "seed": seed,
            "n_splits": n_splits, "main_folder": listing.main_folder, "extra_folder": listing.extra_folder,
            "counts": listing.counts(threshold)}


def load_hd_protocol(listing: HdListing, splits_root: Path, threshold: int, seed: int, n_splits: int,
                     force: bool = False) -> Protocol:
    """The split files for this listing, seed and threshold; (re)written when they do not match
    (or when `force`: the same lists again, byte for byte)."""
    d = split_dir(splits_root, HD_ASPECT, seed)
    want = _listing_record(listing, threshold, seed, n_splits)
    try:
        have = json.loads((d / LISTING_FILE).read_text())
    except (OSError, ValueError):
        have = {}
    same = {k: v for k, v in have.items() if k != "n_splits"} == {k: v for k, v in want.items() if k != "n_splits"}
    if force or not (same and have.get("n_splits", 0) >= n_splits):
        proto = build_hd_protocol(listing, threshold, seed, n_splits)  # a refused threshold touches nothing
        with atomic_folder(d) as tmp:  # the whole set replaced at once: no stale or missing file
            write_split_files(proto, splits_root, tmp)
            atomic_write_json(tmp / LISTING_FILE, want)
        c = want["counts"]
        print(f"[clipfh] HD listing {display_path(listing.root)}: {c['main_ids']} subjects "
              f"({c['main_images']} images) in {listing.main_folder}, {c['extra_ids']} extra subjects "
              f"({c['extra_images']} images) in {listing.extra_folder}; ids <= {threshold} train "
              f"({c['train_ids']} ids), {c['test_ids']} test ids; split lists written to {display_path(d)}",
              flush=True)
    proto = read_split_files(splits_root, HD_ASPECT, seed)
    proto.queries, proto.galleries, proto.galleries_all = (
        proto.queries[:n_splits], proto.galleries[:n_splits], proto.galleries_all[:n_splits])
    return proto


# --------------------------------------------------------------------------- the dataset

@dataclass
class HdDataset(HandDataset):
    """HD as a HandDataset: the folder listing takes the place of HandInfo.csv."""
    id_threshold: int = 447
    listing: HdListing | None = field(default=None, repr=False)

    @property
    def is_real(self) -> bool:
        return self.kind == "hd"

    def records(self):
        raise ConfigError(f"{self.key}: HD has no HandInfo.csv; its split lists come from the folder "
                          "listing (HdDataset.protocol, HdDataset.counts)")

    def protocol(self) -> Protocol:
        if self._protocol is None:
            self._protocol = load_hd_protocol(self.listing, self.splits_root, self.id_threshold,
                                              self.split_seed, self.n_splits)
        return self._protocol

    def write_splits(self, seed: int, n_splits: int) -> dict[str, Protocol]:
        """Write the split lists (HD has one aspect); what `write_all_splits` does for 11k."""
        return {HD_ASPECT: load_hd_protocol(self.listing, self.splits_root, self.id_threshold, seed, n_splits,
                                            force=True)}

    def aspect_counts(self) -> list[dict]:
        """HD's one aspect in the columns of the 11k table: no accessories filter (none removed),
        the subjects split by the threshold; the extra subjects (distractors) beside them."""
        c = self.listing.counts(self.id_threshold)
        return [{"aspect": HD_ASPECT, "images": c["main_images"], "with_accessories": 0, "kept": c["main_images"],
                 "ids": c["main_ids"], "id_threshold": self.id_threshold, "train_ids": c["train_ids"],
                 "test_ids": c["test_ids"], "extra_ids": c["extra_ids"], "extra_images": c["extra_images"]}]

    def counts(self) -> dict[str, int]:
        """Subjects and images found in the folder, split by the threshold (recorded with the lists)."""
        return {"hd_id_threshold": self.id_threshold, **self.listing.counts(self.id_threshold)}

    def identity(self) -> dict:
        proto = self.protocol()
        train_names = [r.image_name for r in proto.train + proto.val]
        return {"dataset": self.kind, "aspect": self.aspect, "split_seed": self.split_seed,
                "hd_id_threshold": self.id_threshold, "listing_sha256": self.listing.sha256(),
                "train_images_sha256": files_digest(self.images_dir, train_names)}
