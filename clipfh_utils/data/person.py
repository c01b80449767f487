"""The person re-identification benchmarks CLIP-ReID and PromptSG publish on, as their users have
them on disk: Market-1501 and MSMT17, with their own fixed query/gallery (no Monte Carlo splits).

Layouts (the datasets' own, as the methods' loaders read them):

    Market-1501/bounding_box_train/<pid>_c<cam>s<seq>_<frame>_<box>.jpg   751 ids, 12,936 images
    Market-1501/query/...                                                 3,368 queries
    Market-1501/bounding_box_test/...                                     19,732 files: pid -1 junk
        (ignored: not in the evaluated gallery, 15,913 images remain) and pid 0 distractors (kept,
        never matching)
    MSMT17/train/, MSMT17/test/ and list_train.txt, list_val.txt, list_query.txt, list_gallery.txt,
        one "<folder>/<pid>_<k>_<cam>_<...>.jpg <pid>" per line; training = train + val lists
        (1,041 ids, 32,621 images, as CLIP-ReID trains), 11,659 queries, 82,161 gallery images.

The listing is checked (a missing folder or list, a name that does not parse, a camera out of range,
a query whose identity the gallery holds under no other camera: one-line errors naming the file)
and its counts are printed and compared with the published ones, so that a partial copy never
passes for the benchmark. Evaluation: camera-aware, clipfh_utils.evaluation.person.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..config import PERSON_ASPECT, ConfigError, DataCfg, DatasetRef, ProtocolCfg, display_path, repo_path
from ..console import note
from ..provenance import files_digest
from .datasets import HandDataset
from .protocol import Protocol, SplitRow

JUNK_PID = -1          # Market: boxes that are neither good nor bad detections; never evaluated
DISTRACTOR_PID = 0     # Market: false detections, kept in the gallery, never a match
MARKET_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
MSMT_LISTS = {"train": ("train", "list_train.txt"), "val": ("train", "list_val.txt"),
              "query": ("test", "list_query.txt"), "gallery": ("test", "list_gallery.txt")}
_MARKET_NAME = re.compile(r"^(-1|\d+)_c(\d+)s\d+_\d+_\d+$")
_MSMT_NAME = re.compile(r"^\d+_\d+_(\d+)_")


class PersonLayoutError(FileNotFoundError):
    """A person benchmark folder that is missing, incomplete or not in the dataset's layout."""


@dataclass(frozen=True)
class Benchmark:
    title: str
    n_cameras: int
    published: dict[str, int]      # the counts the benchmark's papers and loaders print


BENCHMARKS: dict[str, Benchmark] = {
    "market1501": Benchmark("Market-1501", 6, {"train_ids": 751, "train_images": 12936, "query_images": 3368,
                                               "gallery_files": 19732, "gallery_images": 15913}),
    "msmt17": Benchmark("MSMT17", 15, {"train_ids": 1041, "train_images": 32621, "query_images": 11659,
                                       "gallery_files": 82161, "gallery_images": 82161}),
}


@dataclass(frozen=True)
class PersonImage:
    name: str      # relative to the dataset folder: "query/0001_c1s1_001051_00.jpg"
    pid: int       # -1 junk, 0 a distractor (Market) or an identity (MSMT17 counts from 0)
    camera: int    # 1-based, as in the file name


@dataclass
class PersonListing:
    kind: str                      # "market1501" | "msmt17" (the synthetic kind lists as Market)
    root: Path
    train: list[PersonImage]
    query: list[PersonImage]
    gallery: list[PersonImage]     # every listed gallery image, junk included

    @property
    def evaluated_gallery(self) -> list[PersonImage]:
        return [im for im in self.gallery if im.pid != JUNK_PID]

    def counts(self) -> dict[str, int]:
        g = self.evaluated_gallery
        return {"train_ids": len({im.pid for im in self.train}), "train_images": len(self.train),
                "query_ids": len({im.pid for im in self.query}), "query_images": len(self.query),
                "gallery_files": len(self.gallery), "gallery_images": len(g),
                "junk_images": len(self.gallery) - len(g),
                "distractor_images": sum(im.pid == DISTRACTOR_PID for im in g) if self.kind != "msmt17" else 0,
                "cameras": len({im.camera for im in self.train + self.query + self.gallery})}

    def sha256(self) -> str:
        """Digest of every listed name, identity and camera: a changed folder is a new dataset."""
        text = "\n".join(f"{part}:{im.name}:{im.pid}:{im.camera}" for part, ims in
                         (("train", self.train), ("query", self.query), ("gallery", self.gallery)) for im in ims)
        return hashlib.sha256(text.encode()).hexdigest()


def _camera(cam: int, n_cameras: int, where: str) -> int:
    if not 1 <= cam <= n_cameras:
        raise PersonLayoutError(f"{where}: camera {cam} is outside 1..{n_cameras}; the file is not from this "
                                "benchmark or was renamed: remove or restore it")
    return cam


def _market_folder(root: Path, folder: str, n_cameras: int) -> list[PersonImage]:
    d = root / folder
    if not d.is_dir():
        raise PersonLayoutError(f"{d}: folder not found; a Market-1501 folder holds {', '.join(MARKET_FOLDERS)} "
                                "(docs/datasets.md, 'Reproduce the papers'), or set data.market1501_dir")
    found = []
    for f in sorted(d.iterdir()):
        if f.suffix.lower() != ".jpg":
            continue  # Thumbs.db and the like
        m = _MARKET_NAME.match(f.stem)
        if not m:
            raise PersonLayoutError(f"{f}: not named <pid>_c<cam>s<seq>_<frame>_<box>.jpg like Market-1501; "
                                    "rename or remove it")
        found.append(PersonImage(f"{folder}/{f.name}", int(m.group(1)), _camera(int(m.group(2)), n_cameras, str(f))))
    if not found:
        raise PersonLayoutError(f"{d}: no .jpg images; copy the complete Market-1501 folder")
    return found


def scan_market(root: str | Path, kind: str = "market1501", n_cameras: int = 6) -> PersonListing:
    """Market-1501's three folders, parsed and checked."""
    root = Path(root)
    train, query, gallery = (_market_folder(root, f, n_cameras) for f in MARKET_FOLDERS)
    for part, ims in (("bounding_box_train", train), ("query", query)):
        bad = next((im for im in ims if im.pid <= 0), None)
        if bad:
            raise PersonLayoutError(f"{root / bad.name}: pid {bad.pid} (junk/distractor) in {part}/, where every "
                                    "image shows a labelled person; restore the dataset's own folder")
    return _checked(PersonListing(kind, root, train, query, gallery))


def _msmt_list(root: Path, part: str) -> list[PersonImage]:
    folder, list_name = MSMT_LISTS[part]
    path = root / list_name
    if not path.is_file():
        raise PersonLayoutError(f"{path}: list file not found; an MSMT17 folder holds train/, test/ and "
                                f"{', '.join(n for _, n in MSMT_LISTS.values())} (docs/datasets.md), or set data.msmt17_dir")
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        m = _MSMT_NAME.match(Path(fields[0]).name) if len(fields) == 2 else None
        if not m or not fields[1].lstrip("-").isdigit():
            raise PersonLayoutError(f"{path} line {line_no}: {line.strip()!r} is not '<folder>/<pid>_<k>_<cam>_"
                                    "<...>.jpg <pid>' like MSMT17's lists; restore the original list")
        where = f"{path} line {line_no}"
        out.append(PersonImage(f"{folder}/{fields[0]}", int(fields[1]), _camera(int(m.group(1)), 15, where)))
    if not out:
        raise PersonLayoutError(f"{path}: empty; restore the original MSMT17 list")
    return out


def scan_msmt17(root: str | Path) -> PersonListing:
    """MSMT17's four lists (train + val = the training set, as CLIP-ReID trains), checked."""
    root = Path(root)
    for folder in ("train", "test"):
        if not (root / folder).is_dir():
            raise PersonLayoutError(f"{root / folder}: folder not found; an MSMT17 folder holds train/ and test/ "
                                    "beside its list files (docs/datasets.md), or set data.msmt17_dir")
    lists = {part: _msmt_list(root, part) for part in MSMT_LISTS}
    return _checked(PersonListing("msmt17", root, lists["train"] + lists["val"], lists["query"], lists["gallery"]))


def _checked(listing: PersonListing) -> PersonListing:
    """Every query must have a true match the evaluation can count: its identity in the gallery
    under another camera (same-camera images are removed per query)."""
    cams: dict[int, set[int]] = defaultdict(set)
    for im in listing.evaluated_gallery:
        cams[im.pid].add(im.camera)
    for q in listing.query:
        if not cams[q.pid] - {q.camera}:
            where = "under no other camera" if cams[q.pid] else "at all"
            raise PersonLayoutError(f"{listing.root / q.name}: identity {q.pid} is not in the gallery {where}, so "
                                    "this query cannot be evaluated; restore the complete gallery")
    return listing


def check_published(listing: PersonListing) -> None:
    """The counts found must be the benchmark's published ones: an error lists every difference."""
    bench = BENCHMARKS[listing.kind]
    found = listing.counts()
    diff = [f"{k} {found[k]:,} (published {v:,})" for k, v in bench.published.items() if found[k] != v]
    if diff:
        raise PersonLayoutError(f"{listing.root}: {'; '.join(diff)}: not the complete {bench.title}; "
                                "copy the whole dataset (the counts are checked so a partial copy never passes)")


# --------------------------------------------------------------------------- the protocol

def _row(im: PersonImage) -> SplitRow:
    return SplitRow(im.name, str(im.pid), PERSON_ASPECT, im.pid)


@dataclass
class PersonProtocol(Protocol):
    """The benchmark's fixed query/gallery as one split, with each image's camera.

    `val` is the first training image of every training identity, NOT removed from training (the
    benchmarks train on everything): training monitors see training images."""
    cameras: dict[str, int] = field(default_factory=dict)   # image name -> camera
    evaluations: ClassVar[tuple[str, ...]] = ("person",)


def build_person_protocol(listing: PersonListing) -> PersonProtocol:
    train = [_row(im) for im in listing.train]
    firsts: dict[str, SplitRow] = {}
    for r in sorted(train, key=lambda r: r.image_name):
        firsts.setdefault(r.person_id, r)
    query, gallery = [_row(im) for im in listing.query], [_row(im) for im in listing.evaluated_gallery]
    cameras = {im.name: im.camera for im in listing.train + listing.query + listing.evaluated_gallery}
    return PersonProtocol(PERSON_ASPECT, 0, train, list(firsts.values()), query + gallery,
                          [query], [gallery], [gallery], cameras=cameras)


# --------------------------------------------------------------------------- the dataset

@dataclass
class PersonDataset(HandDataset):
    """A person benchmark as a dataset of the workbench: the listing takes HandInfo.csv's place."""
    listing: PersonListing | None = field(default=None, repr=False)

    @property
    def is_real(self) -> bool:
        return self.kind in BENCHMARKS

    def records(self):
        raise ConfigError(f"{self.key}: a person benchmark has no HandInfo.csv and no split lists to write; its "
                          "query/gallery are the dataset's own folders, checked and counted whenever a profile loads it")

    def protocol(self) -> PersonProtocol:
        if self._protocol is None:
            self._protocol = build_person_protocol(self.listing)
        return self._protocol

    def counts(self) -> dict[str, int]:
        return self.listing.counts()

    def identity(self) -> dict:
        proto = self.protocol()
        return {"dataset": self.kind, "aspect": self.aspect, "listing_sha256": self.listing.sha256(),
                "train_images_sha256": files_digest(self.images_dir, [r.image_name for r in proto.train])}


def _summary(listing: PersonListing, title: str) -> str:
    c = listing.counts()
    return (f"{title} {display_path(listing.root)}: {c['train_ids']:,} training ids ({c['train_images']:,} images), "
            f"{c['query_images']:,} queries ({c['query_ids']:,} ids), {c['gallery_images']:,} gallery images "
            f"({c['gallery_files']:,} listed, {c['junk_images']:,} junk ignored, {c['distractor_images']:,} "
            f"distractors), {c['cameras']} cameras")


def prepare_person(data: DataCfg, ref: DatasetRef, protocol: ProtocolCfg) -> PersonDataset:
    """The real benchmark folder (checked against the published counts), or synthetic people in
    Market's layout (written once)."""
    if protocol.n_splits != 1:
        note(f"protocol.n_splits = {protocol.n_splits} does not apply to {ref.dataset}: it has its own fixed "
             "query/gallery (one split, no Monte Carlo draws; its metrics say n_splits 1)")
    if ref.dataset in BENCHMARKS:
        bench = BENCHMARKS[ref.dataset]
        root = repo_path(data.market1501_dir if ref.dataset == "market1501" else data.msmt17_dir)
        listing = scan_market(root) if ref.dataset == "market1501" else scan_msmt17(root)
        check_published(listing)
        desc = _summary(listing, f"{bench.title}, real images:") + " (the published counts)"
    else:
        from .synthetic_person import generate_synthetic_person
        s = data.synthetic_person
        root = generate_synthetic_person(repo_path(data.synthetic_dir), s)
        listing = scan_market(root, ref.dataset, n_cameras=6)
        desc = ("SYNTHETIC people in the Market-1501 layout generated by clipfh_utils.data.synthetic_person "
                f"(seed {s.seed}): " + _summary(listing, "").strip() + "; not a person-ReID result")
    if str(listing.root) not in _ANNOUNCED:
        _ANNOUNCED.add(str(listing.root))
        print(f"[clipfh] {desc}", flush=True)
    return PersonDataset(ref.dataset, PERSON_ASPECT, handinfo=root, images_dir=root, splits_root=root,
                         cache_dir=repo_path(data.cache_dir), description=desc, split_seed=protocol.seed,
                         n_splits=1, listing=listing)


_ANNOUNCED: set[str] = set()


def benchmark_of(kind: str) -> Benchmark | None:
    """The published benchmark a dataset kind stands for (its synthetic stand-in included)."""
    return BENCHMARKS.get(kind.removesuffix("-synthetic"))
