import pytest
import torch
import torch.nn.functional as F

from clipfh_utils.features import embed_images, normalize
from clipfh_utils.models import TINY_MODELS, WeightsNotFoundError, load_clip


@pytest.fixture()
def offline_env(tmp_path, monkeypatch):
    """No weights anywhere: empty weights dir and an empty offline HF cache."""
    monkeypatch.setenv("CLIPFH_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("clipfh_utils.models.REPO_ROOT", tmp_path)


@pytest.mark.parametrize("name", ["ViT-B-16", "RN50"])
def test_missing_openai_weights_error_lists_three_ways(offline_env, name):
    with pytest.raises(WeightsNotFoundError) as e:
        load_clip(name, "openai")
    msg = str(e.value)
    assert name in msg and "local-dir:" in msg and "HF_HUB_OFFLINE" in msg and ".pt" in msg
    assert "\n" not in msg


def test_missing_weights_file_and_folder(offline_env, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope.safetensors: file not found"):
        load_clip("ViT-B-16", str(tmp_path / "nope.safetensors"))
    with pytest.raises(WeightsNotFoundError, match="open_clip_config.json"):
        load_clip("RN50", f"local-dir:{tmp_path}")
    with pytest.raises(ValueError, match="unknown backbone"):
        load_clip("ViT-Q-99")


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_tiny_models_shapes_and_random_flag(name):
    clip = load_clip(name)
    assert not clip.pretrained and "random" in clip.weights and "[random init]" in clip.label
    assert not clip.model.training
    x = torch.randint(0, 256, (5, 3, *clip.image_size), dtype=torch.uint8)
    f = embed_images(clip.model.encode_image, x, clip.mean, clip.std, torch.device("cpu"), batch_size=2)
    assert f.shape == (5, 64) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-5)


def test_weights_file_round_trip(tmp_path):
    from safetensors.torch import save_file
    a = load_clip("tiny-vit")
    save_file({k: v.contiguous() for k, v in a.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    b = load_clip("tiny-vit", str(tmp_path / "w.safetensors"))
    assert b.pretrained and "w.safetensors" in b.weights
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(a.model.encode_image(x), b.model.encode_image(x), atol=1e-6)


def test_flip_averaging_and_normalisation():
    clip = load_clip("tiny-rn")
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    f = embed_images(clip.model.encode_image, x, clip.mean, clip.std, torch.device("cpu"), flip=True)
    with torch.no_grad():
        n = normalize(x, clip.mean, clip.std)
        manual = F.normalize(clip.model.encode_image(n) + clip.model.encode_image(n.flip(3)), dim=1)
    assert torch.allclose(f, manual, atol=1e-5)
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    assert torch.allclose(n, (x.float() / 255 - mean) / std)


def test_non_native_input_sizes():
    rn = load_clip("tiny-rn", image_size=(64, 96))
    vit = load_clip("tiny-vit", image_size=(48, 64))
    with torch.no_grad():
        assert rn.model.encode_image(torch.randn(2, 3, 64, 96)).shape == (2, 64)
        assert vit.model.encode_image(torch.randn(2, 3, 48, 64)).shape == (2, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        load_clip("tiny-rn", image_size=(50, 64))


def test_weight_discovery_order(offline_env, tmp_path, monkeypatch):
    from clipfh_utils.models import _find_openai_weights
    assert _find_openai_weights("ViT-B-16") is None
    # an offline Hugging Face cache entry is found ...
    snap = tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    (tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai" / "refs").mkdir()
    (tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai" / "refs" / "main").write_text("abc")
    found = _find_openai_weights("ViT-B-16")
    assert found is not None and found.endswith("open_clip_model.safetensors")
    assert _find_openai_weights("RN50") is None
    # ... but a file in the weights folder wins
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "ViT-B-16.pt").write_bytes(b"x")
    assert _find_openai_weights("ViT-B-16") == str(tmp_path / "weights" / "ViT-B-16.pt")


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = load_clip("tiny-vit")
    assert torch.equal(torch.rand(1), before)
    b, c = load_clip("tiny-vit"), load_clip("tiny-vit", seed=1)
    wa, wb, wc = (m.model.visual.conv1.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
