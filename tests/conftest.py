from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_HANDINFO = REPO / "data" / "11k" / "HandInfo.csv"


@pytest.fixture(scope="session")
def real_records():
    from clipfh_utils.data.handinfo import load_handinfo
    return load_handinfo(REAL_HANDINFO)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic hand dataset in the real schema (shared by several tests)."""
    from clipfh_utils.data.synthetic import generate_synthetic_dataset
    root = tmp_path_factory.mktemp("synth")
    csv_path = generate_synthetic_dataset(root, n_train_ids=6, n_test_ids=6, images_per_id=(4, 5),
                                          size=(96, 72), seed=3)
    return Path(csv_path), root / "Hands"
