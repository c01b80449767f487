"""Backbones: loading by name (offline weights, checks against the architecture, QuickGELU), the
adapters' four features against a brute-force forward, last stride 1, the text tower."""
import pytest
import torch
import torch.nn.functional as F

from clipfh_utils.backbones import (TINY_MODELS, VisionAdapter, WeightsMismatchError, WeightsNotFoundError,
                                    embed_images, load_clip, normalize)
from clipfh_utils.backbones.text import PromptTemplate, TextEncoder, encode_sentences


@pytest.fixture()
def offline_env(tmp_path, monkeypatch):
    """No weights anywhere: empty weights dir and an empty offline HF cache."""
    monkeypatch.setenv("CLIPFH_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("clipfh_utils.backbones.weights.REPO_ROOT", tmp_path)


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


def test_wrong_architecture_and_garbage_files_are_named(tmp_path):
    from safetensors.torch import save_file
    rn = load_clip("RN50")
    save_file({k: v.contiguous() for k, v in rn.model.state_dict().items()}, str(tmp_path / "rn50.safetensors"))
    with pytest.raises(WeightsMismatchError) as e:
        load_clip("ViT-B-16", str(tmp_path / "rn50.safetensors"))
    msg = str(e.value)
    assert "rn50.safetensors" in msg and "does not fit ViT-B-16" in msg and "ResNet (RN50)" in msg
    assert len(msg) < 600 and "\n" not in msg
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsMismatchError, match="junk.pt: not a readable weights file"):
        load_clip("RN50", str(tmp_path / "junk.pt"))


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_tiny_models_shapes_and_random_flag(name):
    clip = load_clip(name)
    assert not clip.pretrained and "random" in clip.weights and "[random init]" in clip.label
    assert not clip.model.training
    x = torch.randint(0, 256, (5, 3, *clip.image_size), dtype=torch.uint8)
    f = embed_images(clip.model.encode_image, x, clip.mean, clip.std, torch.device("cpu"), batch_size=2)
    assert f.shape == (5, 64) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-5)


def test_weights_file_round_trip_records_digest(tmp_path):
    from safetensors.torch import save_file
    a = load_clip("tiny-vit")
    save_file({k: v.contiguous() for k, v in a.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    b = load_clip("tiny-vit", str(tmp_path / "w.safetensors"))
    assert b.pretrained and "w.safetensors" in b.weights and len(b.weights_sha256) == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(a.model.encode_image(x), b.model.encode_image(x), atol=1e-6)


def test_quick_gelu_auto_follows_the_weights_source():
    from open_clip.transformer import QuickGELU
    def acts(clip):
        return {type(m).__name__ for m in clip.model.visual.modules()}
    assert load_clip("ViT-B-32").quick_gelu  # random init of an OpenAI architecture
    assert QuickGELU.__name__ in acts(load_clip("tiny-vit"))
    plain = load_clip("tiny-vit", quick_gelu=False)
    assert not plain.quick_gelu and QuickGELU.__name__ not in acts(plain)
    # auto: a pretrained tag says itself; OpenAI's do, LAION's do not
    from clipfh_utils.backbones.loading import _resolve_quick_gelu
    assert _resolve_quick_gelu("auto", "ViT-B-16", "tag", {"tag": "openai"}, None) is True
    assert _resolve_quick_gelu("auto", "ViT-B-16", "tag", {"tag": "laion2b_s34b_b88k"}, None) is False
    assert _resolve_quick_gelu("auto", "ViT-M-16", "random", {}, None) is False  # no OpenAI release


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
    with pytest.raises(ValueError, match="not a multiple of tiny-vit's patch size 8"):
        load_clip("tiny-vit", image_size=(50, 64))
    cropped = load_clip("tiny-vit", image_size=(50, 64), crop=True)  # the last 2 rows are ignored
    with torch.no_grad():
        assert cropped.model.encode_image(torch.randn(2, 3, 50, 64)).shape == (2, 64)


def test_weight_discovery_order(offline_env, tmp_path, monkeypatch):
    from clipfh_utils.backbones.weights import _find_pretrained
    assert _find_pretrained("ViT-B-16", "openai") is None
    # an offline Hugging Face cache entry is found ...
    snap = tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    (tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai" / "refs").mkdir()
    (tmp_path / "hf" / "models--timm--vit_base_patch16_clip_224.openai" / "refs" / "main").write_text("abc")
    found = _find_pretrained("ViT-B-16", "openai")
    assert found is not None and found.endswith("open_clip_model.safetensors")
    assert _find_pretrained("RN50", "openai") is None
    # ... but a file in the weights folder wins
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "ViT-B-16.pt").write_bytes(b"x")
    assert _find_pretrained("ViT-B-16", "openai") == str(tmp_path / "weights" / "ViT-B-16.pt")
    # without $CLIPFH_WEIGHTS_DIR: the repository's weights/ folder (REPO_ROOT is tmp_path here)
    monkeypatch.setenv("CLIPFH_WEIGHTS_DIR", str(tmp_path / "elsewhere"))
    assert _find_pretrained("RN50", "openai") is None
    (tmp_path / "weights" / "RN50.safetensors").write_bytes(b"x")
    assert _find_pretrained("RN50", "openai") == str(tmp_path / "weights" / "RN50.safetensors")
    monkeypatch.delenv("CLIPFH_WEIGHTS_DIR")
    assert _find_pretrained("RN50", "openai") == str(tmp_path / "weights" / "RN50.safetensors")


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = load_clip("tiny-vit")
    assert torch.equal(torch.rand(1), before)
    b, c = load_clip("tiny-vit", seed=1), load_clip("tiny-vit")
    wa, wb, wc = (m.model.visual.conv1.weight for m in (a, b, c))
    assert torch.equal(wa, wc) and not torch.equal(wa, wb)


# --------------------------------------------------------------------------- adapters

def _vit_by_hand(visual, x):
    """The ViT forward written out block by block (the test's own, independent of the adapter)."""
    t = visual.conv1(x).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(t.shape[0], 1, -1)
    t = visual.ln_pre(torch.cat([cls, t], 1) + visual.positional_embedding)
    outs = []
    for blk in visual.transformer.resblocks:
        t = blk(t)
        outs.append(t)
    last = visual.ln_post(outs[-1])
    return outs[-2][:, 0], last[:, 0], last[:, 0] @ visual.proj, last[:, 1:]


def test_vit_adapter_features_match_a_hand_written_forward():
    clip = load_clip("tiny-vit", image_size=(48, 64))
    clip.model.visual.transformer.resblocks.append(
        type(clip.model.visual.transformer.resblocks[0])(64, 2, act_layer=torch.nn.GELU))  # 3 blocks
    adapter = VisionAdapter(clip).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        f = adapter(x)
        mid, final, proj, tokens = _vit_by_hand(clip.model.visual, x)
        assert torch.allclose(f.mid, mid, atol=1e-5)          # block n-1, not the last block
        assert not torch.allclose(f.mid, final[:, :64], atol=1e-3)
        assert torch.allclose(f.final, final, atol=1e-5) and torch.allclose(f.proj, proj, atol=1e-5)
        assert torch.allclose(f.tokens, tokens, atol=1e-5)
        assert torch.equal(f.proj, clip.model.encode_image(x))  # the zero-shot feature, exactly
        assert f.grid == (6, 8) and f.tokens.shape == (2, 48, 64)
        assert torch.allclose(adapter.project_tokens(f.tokens), tokens @ clip.model.visual.proj, atol=1e-5)


def test_resnet_adapter_features_and_last_stride():
    clip = load_clip("tiny-rn")
    v = clip.model.visual
    adapter = VisionAdapter(clip).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = adapter(x)
        l3 = v.layer3(v.layer2(v.layer1(v.stem(x))))
        l4 = v.layer4(l3)
        assert torch.allclose(f.mid, l3.mean((2, 3)), atol=1e-5)
        assert torch.allclose(f.final, l4.mean((2, 3)), atol=1e-5)
        assert torch.equal(f.proj, clip.model.encode_image(x))  # stride 2 = the zero-shot feature
        assert f.grid == (2, 2) and f.tokens.shape == (2, 4, 512)
    big = VisionAdapter(load_clip("RN50", last_stride=1))
    assert big.grid == (14, 14)                                  # CLIP-ReID's last stride 1 at 224
    assert VisionAdapter(load_clip("RN50")).grid == (7, 7)
    with pytest.raises(ValueError, match="ResNet backbones only"):
        load_clip("tiny-vit", last_stride=1)


def test_resnet_token_projection_is_the_attnpool_value_path():
    clip = load_clip("tiny-rn")
    pool = clip.model.visual.attnpool
    adapter = VisionAdapter(clip).eval()
    with torch.no_grad():
        f = adapter(torch.randn(1, 3, 64, 64))
        # a single token attending only to itself: attnpool's output for it is c_proj(v_proj(token + pos))
        t = f.tokens[0, 0] + pool.positional_embedding[1]
        assert torch.allclose(adapter.project_tokens(f.tokens)[0, 0], pool.c_proj(pool.v_proj(t)), atol=1e-5)


# --------------------------------------------------------------------------- text

def test_text_encoder_from_embeddings_equals_encode_text():
    vit = load_clip("tiny-vit")
    words = ["big", "strong", "left", "old"]
    tok = vit.tokenizer
    assert all((tok([w])[0] > 0).sum() == 3 for w in words)  # each word is one BPE token
    tpl = PromptTemplate(vit, "A photo of a X X X X hand.", 4)
    assert tpl.start == 5  # "A photo of a X X X X hand." -> X at positions 5-8
    text = TextEncoder(vit.model)
    with torch.no_grad():
        emb = vit.model.token_embedding(tok([" ".join(words)])[0, 1:5])[None]
        ours = text(*tpl(emb))
        ref = vit.model.encode_text(tok([f"A photo of a {' '.join(words)} hand."]))
        assert torch.allclose(ours, ref, atol=1e-5)
        assert torch.allclose(encode_sentences(vit, text, ["a hand"]), vit.model.encode_text(tok(["a hand"])), atol=1e-5)


def test_template_must_hold_n_placeholders():
    vit = load_clip("tiny-vit")
    with pytest.raises(ValueError, match="exactly 4 consecutive"):
        PromptTemplate(vit, "A photo of a X hand.", 4)
    assert PromptTemplate(vit, "A photo of a * hand.", 1, placeholder="*").start == 5


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size, last_stride, grid", [((64, 64), 1, (4, 4)), ((96, 128), 2, (3, 4))])
def test_attnpool_grid_resize_is_f_interpolate_of_the_stored_grid(mode, size, last_stride, grid):
    """CLIP-ReID's official code resizes the attnpool position grid bilinearly, align_corners=False:
    the resized embedding is exactly that interpolation of the stored (native) grid, CLS entry kept."""
    native = load_clip("tiny-rn")  # 64 px, stride 2: a 2 x 2 grid, not resized
    pos = native.model.visual.attnpool.positional_embedding.detach()
    assert pos.shape[0] == 1 + 2 * 2
    stored = pos[1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)          # (1, C, 2, 2)
    ref = F.interpolate(stored, size=grid, mode=mode, align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    clip = load_clip("tiny-rn", image_size=size, last_stride=last_stride, attnpool_resize=mode)
    new = clip.model.visual.attnpool.positional_embedding.detach()
    assert torch.equal(new[0], pos[0]) and new.shape == (1 + grid[0] * grid[1], pos.shape[1])
    assert torch.allclose(new[1:], ref, atol=1e-6)
    other = "bicubic" if mode == "bilinear" else "bilinear"
    ref_other = F.interpolate(stored, size=grid, mode=other, align_corners=False)
    assert not torch.allclose(new[1:], ref_other.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1), atol=1e-4)


def test_attnpool_resize_default_is_bilinear_and_bad_modes_are_refused():
    a = load_clip("tiny-rn", last_stride=1).model.visual.attnpool.positional_embedding
    b = load_clip("tiny-rn", last_stride=1, attnpool_resize="bilinear").model.visual.attnpool.positional_embedding
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="attnpool resize mode 'nearest': use one of bilinear, bicubic"):
        load_clip("tiny-rn", last_stride=1, attnpool_resize="nearest")
