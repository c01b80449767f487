import numpy as np
import pytest
import torch
from PIL import Image

from clipfh_utils.data import image_cache
from clipfh_utils.data.image_cache import ImageDecodeError, MissingImagesError, load_images


def _make_images(folder, n=4, size=(80, 60)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"Hand_{i:07d}.jpg", quality=95)
        names.append(f"Hand_{i:07d}.jpg")
    return names


def test_decode_resize_and_cache_reuse(tmp_path, monkeypatch):
    names = _make_images(tmp_path / "Hands")
    a = load_images(tmp_path / "Hands", names, (32, 48), tmp_path / "cache")
    assert a.shape == (4, 3, 32, 48) and a.dtype == torch.uint8
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    # a second load must come from the cache: decoding now would fail
    monkeypatch.setattr(image_cache, "decode_image", lambda *a, **k: 1 / 0)
    b = load_images(tmp_path / "Hands", names, (32, 48), tmp_path / "cache")
    assert torch.equal(a, b)


def test_changed_file_or_size_rebuilds(tmp_path):
    names = _make_images(tmp_path / "Hands")
    a = load_images(tmp_path / "Hands", names, (32, 32), tmp_path / "cache")
    load_images(tmp_path / "Hands", names, (16, 16), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    Image.new("RGB", (80, 60), (255, 0, 0)).save(tmp_path / "Hands" / names[0])
    b = load_images(tmp_path / "Hands", names, (32, 32), tmp_path / "cache")
    assert not torch.equal(a[0], b[0]) and torch.equal(a[1:], b[1:])
    assert b[0, 0].float().mean() > 240  # the new red image


def test_missing_images_are_listed_before_any_work(tmp_path):
    names = _make_images(tmp_path / "Hands", n=2)
    wanted = names + [f"Hand_9{i:06d}.jpg" for i in range(7)]
    with pytest.raises(MissingImagesError) as e:
        load_images(tmp_path / "Hands", wanted, (16, 16), tmp_path / "cache")
    msg = str(e.value)
    assert "7 of 9 images missing" in msg and "Hand_9000000.jpg" in msg
    assert not (tmp_path / "cache").exists()
    with pytest.raises(MissingImagesError, match="image folder not found"):
        load_images(tmp_path / "nope", names, (16, 16))


def test_corrupt_image_names_its_path(tmp_path):
    names = _make_images(tmp_path / "Hands", n=2)
    (tmp_path / "Hands" / names[1]).write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageDecodeError, match=names[1]):
        load_images(tmp_path / "Hands", names, (16, 16), tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npy"))
