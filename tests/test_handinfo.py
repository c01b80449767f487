import warnings

import pytest

from clipfh_utils.data.handinfo import ASPECTS, HandInfoError, load_handinfo, verify_checksum

from .conftest import REAL_HANDINFO

HEADER = "id,age,gender,skinColor,accessories,nailPolish,aspectOfHand,imageName,irregularities\n"
ROW = '"0000000",27,"male","fair",0,0,"dorsal right","Hand_0000002.jpg",0\n'


def test_real_file_loads_with_ids_stripped(real_records):
    assert len(real_records) == 11076
    # the dataset paper says 190 people; the file has 189 distinct ids once "1200000 " is stripped
    assert len({r.person_id for r in real_records}) == 189
    assert all(r.person_id == r.person_id.strip() and r.person_id.isdigit() for r in real_records)
    assert any(r.person_id == "1200000" for r in real_records)
    assert {r.aspect for r in real_records} == set(ASPECTS)
    assert verify_checksum(REAL_HANDINFO) is True


def _write(tmp_path, text):
    p = tmp_path / "HandInfo.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    (HEADER + ROW.replace('"dorsal right"', '"dorsal up"'), "row 2: aspectOfHand 'dorsal up'"),
    (HEADER + ROW.replace('"0000000"', '"abc"'), "row 2: id 'abc'"),
    (HEADER + ROW.replace(',0,0,"dorsal', ',2,0,"dorsal'), "row 2: accessories must be 0 or 1"),
    (HEADER + ROW.replace(',0,0,"dorsal', ',x,0,"dorsal'), "row 2: column 'accessories'"),
    (HEADER + ROW + ROW, "row 3: imageName Hand_0000002.jpg already listed at row 2"),
    (HEADER + ROW.replace(',0\n', '\n'), "row 2: 8 fields, expected 9"),
    (HEADER.replace("imageName,", ""), "missing column(s) imageName"),
    ("", "file is empty"),
    (HEADER, "no data rows"),
    (HEADER + ROW + "\n" + ROW.replace("02.jpg", "03.jpg"), "row 3: empty line"),
])
def test_malformed_input_names_file_row_and_problem(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(HandInfoError) as e:
        load_handinfo(p)
    msg = str(e.value)
    assert needle in msg
    assert str(p) in msg
    assert "\n" not in msg


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(HandInfoError, match="file not found"):
        load_handinfo(tmp_path / "nope.csv")


def test_checksum_mismatch_warns(tmp_path):
    p = _write(tmp_path, HEADER + ROW)
    (tmp_path / "HandInfo.csv.sha256").write_text("0" * 64 + "  HandInfo.csv\n")
    with pytest.warns(UserWarning, match="sha256"):
        recs = load_handinfo(p)
    assert len(recs) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_handinfo(p, check_sha256=False)
