"""Stage 2 building blocks: prompts + text encoder, losses, heads, sampler, augmentation, schedules."""
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipfh_utils.augment import DeviceAugment
from clipfh_utils.config import AugmentCfg
from clipfh_utils.features import normalize
from clipfh_utils.losses import CenterLoss, image_to_text_loss, supcon_loss, triplet_loss
from clipfh_utils.models import load_clip
from clipfh_utils.prompts import PromptLearner, TextEncoder, encode_all_identities
from clipfh_utils.reid_model import ArcFace, ReIDModel
from clipfh_utils.sampler import PKSampler
from clipfh_utils.schedules import warmup_cosine, warmup_multistep


@pytest.fixture(scope="module")
def vit():
    return load_clip("tiny-vit")


@pytest.fixture(scope="module")
def rn():
    return load_clip("tiny-rn")


def test_text_encoder_from_embeddings_equals_encode_text(vit):
    words = ["big", "strong", "left", "old"]
    tok = vit.tokenizer
    assert all((tok([w])[0] > 0).sum() == 3 for w in words)  # each word is one BPE token
    pl = PromptLearner(vit, n_ids=3)
    assert pl.start == 5  # "A photo of a X X X X hand." -> X at positions 5-8
    with torch.no_grad():
        pl.ctx[1] = vit.model.token_embedding(tok([" ".join(words)])[0, 1:5])
        ours = TextEncoder(vit.model)(*pl(torch.tensor([1])))
        ref = vit.model.encode_text(tok([f"A photo of a {' '.join(words)} hand."]))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_identity_text_features_are_not_constant(vit):
    # reading position 0 instead of EOT would make every identity's feature identical
    pl = PromptLearner(vit, n_ids=5)
    feats = encode_all_identities(pl, TextEncoder(vit.model), 5)
    assert feats.shape == (5, 64)
    assert torch.cdist(feats, feats).triu(1).sum() > 0
    assert (torch.cdist(feats, feats) + torch.eye(5)).min() > 1e-4


def test_template_must_hold_n_ctx_placeholders(vit):
    with pytest.raises(ValueError, match="exactly 4 consecutive"):
        PromptLearner(vit, 2, template="A photo of a X hand.", n_ctx=4)
    assert PromptLearner(vit, 2, template="A photo of a X X hand.", n_ctx=2).ctx.shape == (2, 2, 64)


def test_triplet_loss_hand_computed():
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest pos 3 (to 1), hardest neg 1 (to 2) -> 3 - 1 + 0.3 = 2.3
    # anchor 1: pos 3, negs sqrt(10), sqrt(34) -> 3 - 3.1623 + 0.3 = 0.1377
    # anchor 2: pos 4, negs 1, sqrt(10) -> 4 - 1 + 0.3 = 3.3
    # anchor 3: pos 4, negs 5, sqrt(34) -> 4 - 5 + 0.3 < 0 -> 0
    expected = (2.3 + (3 - math.sqrt(10) + 0.3) + 3.3 + 0) / 4
    assert triplet_loss(x, y, 0.3).item() == pytest.approx(expected, abs=1e-5)


def test_supcon_matches_loop():
    torch.manual_seed(0)
    a, c = torch.randn(6, 4), torch.randn(5, 4)
    la, lc = torch.tensor([0, 1, 2, 0, 1, 3]), torch.tensor([0, 0, 1, 2, 1])
    total = 0.0
    for i in range(6):
        logits = [float(a[i] @ c[j]) / 0.5 for j in range(5)]
        lse = math.log(sum(math.exp(v) for v in logits))
        pos = [j for j in range(5) if lc[j] == la[i]]
        total += -sum(logits[j] - lse for j in pos) / max(len(pos), 1)
    assert supcon_loss(a, c, la, lc, 0.5).item() == pytest.approx(total / 6, abs=1e-5)


def test_i2t_center_and_arcface():
    torch.manual_seed(0)
    img, txt, y = torch.randn(4, 8), torch.randn(3, 8), torch.tensor([0, 2, 1, 2])
    assert image_to_text_loss(img, txt, y, 0.1).item() == pytest.approx(
        F.cross_entropy(img @ txt.T, y, label_smoothing=0.1).item())
    cl = CenterLoss(3, 8)
    assert cl(img, y).item() == pytest.approx(((img - cl.centers[y]) ** 2).sum(1).mean().item())
    arc = ArcFace(8, 3, s=10.0, m=0.0)
    cos = F.normalize(img) @ F.normalize(arc.weight).T
    assert torch.allclose(arc(img, y), 10 * cos, atol=1e-5)
    arc.m = 0.3
    out = arc(img, y)
    theta = torch.acos(cos[torch.arange(4), y].clamp(-1, 1))
    assert torch.allclose(out[torch.arange(4), y], 10 * torch.cos(theta + 0.3), atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_reid_model_features(name, vit, rn):
    clip = vit if name == "tiny-vit" else rn
    m = ReIDModel(clip, n_classes=5).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = m(x)
        mid, final, proj = out.feats
        assert proj.shape == (3, 64) and out.logits[0].shape == (3, 5)
        assert torch.allclose(proj, clip.model.encode_image(x), atol=1e-5)  # same projection path
        assert torch.equal(m.embed(x), torch.cat([final, proj], 1))
    assert not m.bn.bias.requires_grad and not m.bn_proj.bias.requires_grad
    assert m.classifier.bias is None and m.classifier.weight.std() < 0.005


def test_pk_sampler_invariants():
    labels = [0] * 9 + [1] * 2 + [2] * 5 + [3] * 4 + [4] * 8
    s = PKSampler(labels, p=3, k=4, seed=0)
    batches = s.epoch()
    assert batches
    seen = Counter()
    for b in batches:
        assert len(b) == 12
        ids = [labels[i] for i in b]
        assert Counter(ids) == Counter({i: 4 for i in set(ids)}) and len(set(ids)) == 3
        for j in range(3):
            chunk = b[4 * j:4 * j + 4]
            if labels[chunk[0]] != 1:  # only id 1 (2 images) is sampled with replacement
                assert len(set(chunk)) == 4
        seen.update(b.tolist())
    assert any(seen[i] >= 2 for i in (9, 10))  # id 1's two images repeat to fill K
    assert max(c for i, c in seen.items() if labels[i] != 1) == 1  # no image twice otherwise
    state = s.state_dict()
    nxt = s.epoch()
    s.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(nxt, s.epoch()))
    with pytest.raises(ValueError, match="lower finetune.p"):
        PKSampler(labels, p=6, k=4)


def test_train_and_test_normalisation_are_the_same():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    mean, std = (0.48, 0.45, 0.40), (0.27, 0.26, 0.27)
    off = DeviceAugment(AugmentCfg(flip=0, pad=0, erase=0), mean, std, torch.Generator().manual_seed(0))
    assert torch.equal(off(x), normalize(x, mean, std))
    on = DeviceAugment(AugmentCfg(flip=1.0, pad=0, erase=0), mean, std, torch.Generator().manual_seed(0))
    assert torch.equal(on(x), normalize(x.flip(3), mean, std))


def test_augmentation_crop_and_erase():
    x = torch.randint(1, 256, (64, 3, 20, 20), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    crop = DeviceAugment(AugmentCfg(flip=0, pad=4, erase=0), mean, std, torch.Generator().manual_seed(1))
    y = crop(x)
    zero = normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), mean, std)[0, :, 0, 0]
    padded_px = (y == zero[None, :, None, None]).all(1)
    assert padded_px.any() and not padded_px.all()
    # every crop is a shifted window of the padded image: check one against a direct slice
    g = torch.Generator().manual_seed(1)
    oy = int((torch.rand(64, generator=g) * 9).long().clamp(max=8)[0])
    ox = int((torch.rand(64, generator=g) * 9).long().clamp(max=8)[0])
    ref = F.pad(x, (4, 4, 4, 4))[0, :, oy:oy + 20, ox:ox + 20]
    assert torch.equal(y[0], normalize(ref[None], mean, std)[0])
    er = DeviceAugment(AugmentCfg(flip=0, pad=0, erase=1.0), mean, std, torch.Generator().manual_seed(2))
    changed = (er(x) != normalize(x, mean, std)).any(1).float().mean((1, 2))
    assert (changed > 0.01).all() and (changed < 0.5).all()


def test_schedules_match_the_recipe():
    f = [warmup_multistep(e, [30, 50], 0.1, 10, 0.1) for e in range(60)]
    assert f[0] == pytest.approx(0.1) and f[5] == pytest.approx(0.55) and f[10] == 1
    assert f[29] == 1 and f[30] == pytest.approx(0.1) and f[50] == pytest.approx(0.01)
    lr = [warmup_cosine(e, 3.5e-4, 120, 5, 1e-5, 1e-6) for e in range(120)]
    assert lr[0] == pytest.approx(1e-5) and lr[5] < 3.5e-4 and lr[4] < lr[5]
    assert lr[119] == pytest.approx(1e-6 + 0.5 * (3.5e-4 - 1e-6) * (1 + math.cos(math.pi * 119 / 120)))
