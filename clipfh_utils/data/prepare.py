"""Which dataset a profile names, made ready: `prepare_dataset` resolves every dataset kind (real 11k
Hands, images rendered for its rows, generated synthetic hands, HD, the person benchmarks) and generates or
renders images once.

The one place that knows all kinds: the kinds' modules (`datasets`, `hd`, `synthetic`) never import it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import HD_ASPECT, DataCfg, DatasetRef, ProtocolCfg, display_path, repo_path, to_dict
from ..console import note
from .datasets import SOURCE_RECORD, HandDataset, recorded_source
from .handinfo import HandInfoError, handinfo_checksum
from .hd import ORIGINAL, HdDataset, scan_hd
from .person import prepare_person
from .synthetic import GENERATOR_VERSION, generate_synthetic_dataset, generate_synthetic_hd, render_images_for_handinfo


def splits_root_for(data: DataCfg, handinfo: Path) -> Path:
    """Where the split lists of the 11k metadata live: the committed ones for the metadata they
    were built from (its sha256 is recorded beside them, so a modified copy elsewhere, with or
    without a `.sha256` of its own, is recognised). Other metadata never rewrites them: it is an
    error, or, with `data.allow_modified_handinfo`, its split lists go to a folder of their own
    (said on the console)."""
    committed = repo_path(data.splits_dir) / "11k"
    if not handinfo.exists():
        raise HandInfoError(f"{handinfo}: file not found; put the 11k Hands HandInfo.csv there "
                            "(a copy ships in data/11k/HandInfo.csv)")
    actual, beside = handinfo_checksum(handinfo)
    recorded = recorded_source(committed)
    expected, against = ((recorded, f"{SOURCE_RECORD} beside the split lists in {display_path(committed)}")
                         if recorded else (beside, f"{handinfo.name}.sha256"))
    if expected is None or actual == expected:
        return committed
    what = f"{display_path(handinfo)}: sha256 {actual[:12]}... differs from {against} ({expected[:12]}...)"
    if not data.allow_modified_handinfo:
        raise HandInfoError(f"{what}; the committed split lists in {display_path(committed)} are never built "
                            "from modified metadata: restore the original file, or pass "
                            "-p data.allow_modified_handinfo=true to build split lists from it elsewhere")
    root = repo_path(data.splits_dir) / f"11k-modified-{actual[:12]}"
    note(f"{what}; using split lists built from it in {display_path(root)} (the committed ones are left "
         "alone); its counts and results are not comparable with published ones")
    return root


def prepare_dataset(data: DataCfg, ref: DatasetRef, protocol: ProtocolCfg) -> HandDataset:
    """Resolve one dataset of a profile; generate or render its images (once) where it asks for that."""
    return _KINDS[ref.dataset](data, ref, protocol)


def _common(data: DataCfg, ref: DatasetRef, protocol: ProtocolCfg) -> dict:
    return {"aspect": ref.aspect, "cache_dir": repo_path(data.cache_dir), "split_seed": protocol.seed,
            "n_splits": protocol.n_splits}


def _real_11k(data: DataCfg, ref: DatasetRef, protocol: ProtocolCfg) -> HandDataset:
    handinfo = repo_path(data.handinfo)
    return HandDataset("11k", handinfo=handinfo, images_dir=repo_path(data.images_dir),
                       splits_root=splits_root_for(data, handinfo),
                       description="11k Hands (Afifi 2019), real images", **_common(data, ref, protocol))


def _rendered_11k(data: DataCfg, ref: DatasetRef, protocol: ProtocolCfg) -> HandDataset:
    w, h = data.render_size
    handinfo = repo_path(data.handinfo)
    ds = HandDataset("11k-rendered", handinfo=handinfo,
                     images_dir=repo_path(data.synthetic_dir) / f"11k-rendered-{w}x{h}" / "Hands",
                     splits_root=splits_root_for(data, handinfo),
                     description=(f"SYNTHETIC images rendered by clipfh_utils.data.synthetic for the "
                                  f"real 11k HandInfo.csv rows ({w}x{h}); not a hand-identification "
                                  "result"), **_common(data, ref, protocol))
    proto = ds.protocol()
    needed = {r.image_name for r in proto.train + proto.val + proto.eval_rows()}
    render_images_for_handinfo(ds.handinfo, ds.images_dir, size=(w, h), only=needed)
    return ds


def _generated_root(data: DataCfg, prefix: str, params: object) -> Path:
    """`data.synthetic_dir/<prefix>-<hash>`: one folder per generator settings and version."""
    text = json.dumps({**to_dict(params), "generator": GENERATOR_VERSION}, sort_keys=True)
    return repo_path(data.synthetic_dir) / f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _synthetic(data: DataCfg, ref: DatasetRef, protocol: ProtocolCfg) -> HandDataset:
    s = data.synthetic
    root = _generated_root(data, "synthetic", s)
    csv_path = generate_synthetic_dataset(root, n_train_ids=s.n_train_ids, n_test_ids=s.n_test_ids,
                                          images_per_id=tuple(s.images_per_id), size=tuple(s.size),
                                          accessory_rate=s.accessory_rate, seed=s.seed)
    desc = (f"SYNTHETIC hands generated by clipfh_utils.data.synthetic ({s.n_train_ids}+{s.n_test_ids} "
            f"ids, seed {s.seed}); not a hand-identification result")
    return HandDataset("synthetic", handinfo=Path(csv_path), images_dir=root / "Hands",
                       splits_root=root / "splits", description=desc, **_common(data, ref, protocol))


def _hd(data: DataCfg, ref: DatasetRef, protocol: ProtocolCfg) -> HdDataset:
    """The real HD folder (checked), or synthetic hands written in its layout (once)."""
    if ref.dataset == "hd":
        hd_dir = repo_path(data.hd_dir)
        splits_root = repo_path(data.splits_dir) / "hd"
        listing = scan_hd(hd_dir)
        c = listing.counts(data.hd_id_threshold)
        desc = (f"HD (PolyU hand dorsal), real images: {c['main_ids']} subjects (ids <= {data.hd_id_threshold} "
                f"train) + {c['extra_ids']} extra subjects as distractors")
    else:
        s = data.synthetic_hd
        root = _generated_root(data, "hd-synthetic", s)
        hd_dir = generate_synthetic_hd(root, s.n_ids, s.n_extra_ids, tuple(s.images_per_id), tuple(s.size), s.seed)
        splits_root = root / "splits"
        listing = scan_hd(hd_dir)
        desc = (f"SYNTHETIC hands in the HD layout generated by clipfh_utils.data.synthetic ({s.n_ids} subjects, "
                f"ids <= {data.hd_id_threshold} train, + {s.n_extra_ids} extra, seed {s.seed}); "
                "not a hand-identification result")
    return HdDataset(ref.dataset, HD_ASPECT, handinfo=hd_dir, images_dir=hd_dir / ORIGINAL,
                     splits_root=splits_root, cache_dir=repo_path(data.cache_dir), description=desc,
                     split_seed=protocol.seed, n_splits=protocol.n_splits,
                     id_threshold=data.hd_id_threshold, listing=listing)


_KINDS = {"11k": _real_11k, "11k-rendered": _rendered_11k, "synthetic": _synthetic, "hd": _hd, "hd-synthetic": _hd,
          # the person benchmarks: listing, checks and published counts live with the kind (data.person)
          "market1501": prepare_person, "msmt17": prepare_person, "market1501-synthetic": prepare_person}
