"""Shared training parts against hand-computed values: losses and their registry, heads, the P x K
sampler, on-device augmentation, learning-rate schedules as the reference code steps them."""
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipfh_utils.backbones.features import normalize
from clipfh_utils.config import ConfigError
from clipfh_utils.training.augment import AugmentCfg, DeviceAugment
from clipfh_utils.training.heads import ArcFace, BNNeckHead
from clipfh_utils.training.losses import (LOSS_TERMS, CenterLoss, check_loss_weights, id_loss,
                                          image_to_text_loss, register_term, supcon_loss, symmetric_supcon,
                                          triplet_loss, weighted_total)
from clipfh_utils.training.sampler import PKSampler
from clipfh_utils.training.schedules import warmup_cosine, warmup_multistep


def smoothed_ce_by_hand(logits, labels, eps):
    """-sum_k q_k log p_k with q = (1 - eps) one-hot + eps / K, averaged, in plain Python."""
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        lse = math.log(sum(math.exp(v) for v in row))
        k = len(row)
        total += -sum(((1 - eps) * (j == y) + eps / k) * (v - lse) for j, v in enumerate(row))
    return total / len(labels)


def test_id_loss_uses_label_smoothing():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    y = torch.tensor([0, 1])
    assert id_loss(logits, y, 0.1).item() == pytest.approx(smoothed_ce_by_hand(logits, y, 0.1), abs=1e-6)
    assert id_loss(logits, y, 0.0).item() == pytest.approx(smoothed_ce_by_hand(logits, y, 0.0), abs=1e-6)
    assert abs(smoothed_ce_by_hand(logits, y, 0.1) - smoothed_ce_by_hand(logits, y, 0.0)) > 0.02


def test_triplet_loss_hand_computed():
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest pos 3 (to 1), hardest neg 1 (to 2) -> 3 - 1 + 0.3 = 2.3
    # anchor 1: pos 3, negs sqrt(10), sqrt(34) -> 3 - 3.1623 + 0.3 = 0.1377
    # anchor 2: pos 4, negs 1, sqrt(10) -> 4 - 1 + 0.3 = 3.3
    # anchor 3: pos 4, negs 5, sqrt(34) -> 4 - 5 + 0.3 < 0 -> 0
    expected = (2.3 + (3 - math.sqrt(10) + 0.3) + 3.3 + 0) / 4
    assert triplet_loss(x, y, 0.3).item() == pytest.approx(expected, abs=1e-5)


def triplet_by_hand(f, y, margin=0.3):
    """Batch-hard triplet in plain Python: per anchor, farthest positive vs nearest negative."""
    total = 0.0
    for i in range(len(f)):
        d = [float((f[i] - f[j]).norm()) for j in range(len(f))]
        pos = max(d[j] for j in range(len(f)) if y[j] == y[i])
        neg = min(d[j] for j in range(len(f)) if y[j] != y[i])
        total += max(0.0, pos - neg + margin)
    return total / len(f)


def supcon_by_hand(a, c, la, lc, t=1.0):
    total = 0.0
    for i in range(len(a)):
        logits = [float(a[i] @ c[j]) / t for j in range(len(c))]
        lse = math.log(sum(math.exp(v) for v in logits))
        pos = [j for j in range(len(c)) if lc[j] == la[i]]
        total += -sum(logits[j] - lse for j in pos) / max(len(pos), 1)
    return total / len(a)


def test_supcon_one_direction_and_symmetric():
    torch.manual_seed(0)
    a, c = torch.randn(6, 4), torch.randn(5, 4)
    la, lc = torch.tensor([0, 1, 2, 0, 1, 3]), torch.tensor([0, 0, 1, 2, 1])
    assert supcon_loss(a, c, la, lc, 0.5).item() == pytest.approx(supcon_by_hand(a, c, la, lc, 0.5), abs=1e-5)
    img, txt, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 0, 2])
    both = supcon_by_hand(img, txt, y, y) + supcon_by_hand(txt, img, y, y)
    assert symmetric_supcon(img, txt, y).item() == pytest.approx(both, abs=1e-5)
    assert abs(supcon_by_hand(img, txt, y, y) - supcon_by_hand(txt, img, y, y)) > 1e-3  # directions differ


def test_i2t_center_and_arcface():
    torch.manual_seed(0)
    img, txt, y = torch.randn(4, 8), torch.randn(3, 8), torch.tensor([0, 2, 1, 2])
    assert image_to_text_loss(img, txt, y, 0.1).item() == pytest.approx(
        smoothed_ce_by_hand(img @ txt.T, y, 0.1), abs=1e-5)
    cl = CenterLoss(3, 8)
    assert cl(img, y).item() == pytest.approx(((img - cl.centers[y]) ** 2).sum(1).mean().item())
    arc = ArcFace(8, 3, s=10.0, m=0.0)
    cos = F.normalize(img) @ F.normalize(arc.weight).T
    assert torch.allclose(arc(img, y), 10 * cos, atol=1e-5)
    arc.m = 0.3
    out = arc(img, y)
    theta = torch.acos(cos[torch.arange(4), y].clamp(-1, 1))
    assert torch.allclose(out[torch.arange(4), y], 10 * torch.cos(theta + 0.3), atol=1e-4)


def test_bnneck_head():
    head = BNNeckHead(6, 4)
    assert not head.bn.bias.requires_grad and head.classifier.bias is None
    assert head.classifier.weight.std() < 0.005
    x = torch.randn(5, 6)
    head.eval()
    bn = (x - head.bn.running_mean) / torch.sqrt(head.bn.running_var + head.bn.eps) * head.bn.weight + head.bn.bias
    assert torch.allclose(head(x), bn @ head.classifier.weight.T, atol=1e-6)


def test_loss_registry_weights_and_total():
    assert {"id", "triplet", "i2t", "center", "supcon"} <= set(LOSS_TERMS)
    check_loss_weights({"id": 0.25, "triplet": 1}, ("id", "triplet"), "cfg.loss_weights")
    with pytest.raises(ConfigError, match=r"cfg.loss_weights.tripplet: unknown loss term"):
        check_loss_weights({"tripplet": 1}, ("id", "triplet"), "cfg.loss_weights")
    with pytest.raises(ConfigError, match=">= 0"):
        check_loss_weights({"id": -1}, ("id",), "w")
    terms = {"id": torch.tensor(2.0), "triplet": torch.tensor(3.0), "i2t": torch.tensor(5.0)}
    assert weighted_total(terms, {"id": 0.25, "triplet": 1.0, "i2t": 1.0}).item() == pytest.approx(8.5)
    assert weighted_total(terms, {"triplet": 1.0}).item() == pytest.approx(3.0)  # absent = weight 0
    with pytest.raises(ValueError, match="already registered"):
        register_term("id", "something else", "not the ID loss")


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
    with pytest.raises(ValueError, match=r"lower P \(identities per batch\)"):
        PKSampler(labels, p=6, k=4)


def test_train_and_test_normalisation_are_the_same():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    mean, std = (0.48, 0.45, 0.40), (0.27, 0.26, 0.27)
    off = DeviceAugment(AugmentCfg(flip=0, pad=0, erase=0), mean, std, torch.Generator().manual_seed(0))
    assert torch.equal(off(x), normalize(x, mean, std))
    on = DeviceAugment(AugmentCfg(flip=1.0, pad=0, erase=0), mean, std, torch.Generator().manual_seed(0))
    assert torch.equal(on(x), normalize(x.flip(3), mean, std))


def test_augmentation_crop_and_erase_with_noise():
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
    out, clean = er(x), normalize(x, mean, std)
    erased = out != clean
    frac = erased.any(1).float().mean((1, 2))
    assert (frac > 0.01).all() and (frac < 0.5).all()
    values = out[erased]
    # erased pixels are standard-normal noise in normalised units, not a constant (zeros, mean colour)
    assert abs(values.mean().item()) < 0.1 and 0.85 < values.std().item() < 1.15
    assert (values == 0).float().mean() < 0.01


def test_multistep_schedule_matches_the_reference_stepping():
    """Hand-computed from CLIP-ReID's WarmupMultiStepLR stepped once before each epoch (epochs 1..E)."""
    f = {e: warmup_multistep(e, [30, 50], 0.1, 10, 0.1) for e in range(1, 61)}
    expected = {1: 0.19, 2: 0.28, 5: 0.55, 9: 0.91, 10: 1.0, 29: 1.0, 30: 0.1, 49: 0.1, 50: 0.01, 60: 0.01}
    for e, v in expected.items():
        assert f[e] == pytest.approx(v), e
    rn = {e: warmup_multistep(e, [40, 70], 0.1, 10, 0.01) for e in (1, 10, 39, 40, 70)}
    assert rn == pytest.approx({1: 0.109, 10: 1.0, 39: 1.0, 40: 0.1, 70: 0.01})


def test_cosine_schedule_matches_the_reference_stepping():
    """timm's CosineLRScheduler as CLIP-ReID configures it, stepped with epoch 1..E."""
    lr = {e: 3.5e-4 * warmup_cosine(e, 120, 5, 1e-5 / 3.5e-4, 1e-6 / 3.5e-4) for e in range(1, 121)}  # factor x base
    assert lr[1] == pytest.approx(7.8e-5)       # not the warm-up start 1e-5
    assert lr[4] == pytest.approx(2.82e-4)
    assert lr[5] == pytest.approx(1e-6 + 0.5 * (3.5e-4 - 1e-6) * (1 + math.cos(math.pi * 5 / 120)))
    assert lr[60] == pytest.approx(1e-6 + 0.5 * (3.5e-4 - 1e-6))
    assert lr[120] == pytest.approx(1e-6)
    assert all(lr[e] > lr[e + 1] for e in range(5, 120))
