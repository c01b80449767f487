"""Reading and validating `HandInfo.csv`, the 11k Hands metadata file.

Every malformed row is an error that names the file, the row and the fix: a silently dropped
row would change the protocol's counts without anyone noticing.
"""
from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..config import ASPECTS
from ..provenance import file_sha256

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "accessories", "aspectOfHand", "imageName")
ALL_COLUMNS: tuple[str, ...] = ("id", "age", "gender", "skinColor", "accessories", "nailPolish",
                                "aspectOfHand", "imageName", "irregularities")


class HandInfoError(ValueError):
    """HandInfo.csv (or a split file) is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class HandRecord:
    image_name: str
    person_id: str  # zero-padded string, stripped: "0000000"
    aspect: str
    accessories: int

    @property
    def id_int(self) -> int:
        return int(self.person_id)


def aspect_slug(aspect: str) -> str:
    """'dorsal right' -> 'dorsal_right' (folder names)."""
    return aspect.replace(" ", "_")


def handinfo_checksum(path: Path) -> tuple[str, str | None]:
    """(sha256 of the file, the one `<file>.sha256` beside it expects, or None without that file)."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.exists():
        return file_sha256(path), None
    words = sidecar.read_text().split()
    return file_sha256(path), (words[0].strip().lower() if words else "")


def verify_checksum(path: Path) -> bool | None:
    """Compare against `<file>.sha256` beside it, if present; warn on mismatch.

    Returns True/False for match/mismatch, None when there is no checksum file.
    """
    path = Path(path)
    actual, expected = handinfo_checksum(path)
    if expected is None:
        return None
    sidecar = path.with_name(path.name + ".sha256")
    if actual != expected:
        warnings.warn(f"{path}: sha256 {actual[:12]}... does not match {sidecar.name} "
                      f"({expected[:12]}...); the split counts may differ from the published ones. "
                      "Restore the original HandInfo.csv of the 11k Hands dataset.", stacklevel=2)
        return False
    return True


def _parse_int(value: str, column: str, where: str) -> int:
    try:
        return int(value.strip())
    except (ValueError, AttributeError):
        raise HandInfoError(f"{where}: column '{column}' must be an integer, got {value!r}; "
                            "fix or remove the row") from None


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark; another encoding names the row."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = data[:e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise HandInfoError(f"{path} row {row}: byte 0x{data[e.start]:02x} at column {column} is not UTF-8 "
                            "text; save the file as UTF-8 (or restore the original)") from None


def load_handinfo(path: str | Path, check_sha256: bool = True) -> list[HandRecord]:
    """Parse HandInfo.csv into records (file order), validating every row."""
    path = Path(path)
    if not path.exists():
        raise HandInfoError(f"{path}: file not found; put the 11k Hands HandInfo.csv there "
                            "(a copy ships in data/11k/HandInfo.csv)")
    if check_sha256:
        verify_checksum(path)
    records: list[HandRecord] = []
    seen: dict[str, int] = {}
    with io.StringIO(_read_text(path), newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise HandInfoError(f"{path}: file is empty; expected a header row with columns "
                                f"{', '.join(ALL_COLUMNS)}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise HandInfoError(f"{path}: missing column(s) {', '.join(missing)} in the header; "
                                f"expected columns {', '.join(ALL_COLUMNS)}")
        col = {name: header.index(name) for name in REQUIRED_COLUMNS}
        for line_no, row in enumerate(reader, start=2):
            where = f"{path} row {line_no}"
            if not row or all(not c.strip() for c in row):
                raise HandInfoError(f"{where}: empty line; remove it")
            if len(row) != len(header):
                raise HandInfoError(f"{where}: {len(row)} fields, expected {len(header)} "
                                    f"({', '.join(header)}); fix the row")
            pid = row[col["id"]].strip()
            if not pid.isdigit():
                raise HandInfoError(f"{where}: id {row[col['id']]!r} is not a number; fix the row")
            aspect = row[col["aspectOfHand"]].strip()
            if aspect not in ASPECTS:
                raise HandInfoError(f"{where}: aspectOfHand {aspect!r} is not one of "
                                    f"{', '.join(ASPECTS)}; fix the row")
            acc = _parse_int(row[col["accessories"]], "accessories", where)
            if acc not in (0, 1):
                raise HandInfoError(f"{where}: accessories must be 0 or 1, got {acc}; fix the row")
            name = row[col["imageName"]].strip()
            if not name:
                raise HandInfoError(f"{where}: imageName is empty; fix the row")
            if name in seen:
                raise HandInfoError(f"{where}: imageName {name} already listed at row {seen[name]}; "
                                    "remove the duplicate")
            seen[name] = line_no
            records.append(HandRecord(name, pid, aspect, acc))
    if not records:
        raise HandInfoError(f"{path}: no data rows")
    return records
