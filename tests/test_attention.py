"""Where models look: attention rollout against a brute-force computation from the weights, hooks
that change nothing, similarity Grad-CAM, Stage 3 cross-attention picked up from the model, and the
hand regions the maps are measured on."""
import colorsys
import dataclasses
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clipfh_utils.backbones.adapters import VisionAdapter
from clipfh_utils.backbones.loading import load_clip
from clipfh_utils.data.synthetic import (REGION_NAMES, Nuisance, hand_regions, identity_from_id,
                                         nuisance_from_name, render_hand)
from clipfh_utils.evaluation import FeatureBank
from clipfh_utils.explain import (AttentionRecorder, ExplainDependencyError, MapSource, ModelEntry,
                                  as_distribution, entries_from_results, photo_regions, region_shares,
                                  rollout_maps, similarity_gradcam)
from clipfh_utils.explain.maps import CROSS, GRADCAM, ROLLOUT


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load_clip("tiny-vit", image_size=(64, 64))


@pytest.fixture(scope="module")
def rn():
    return load_clip("tiny-rn", image_size=(64, 64), last_stride=1)


def images(n=3, seed=0):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- rollout

def brute_force_vit(visual, x):
    """The tiny ViT's forward written out from its weights, head by head, keeping every block's
    attention probabilities; returns (pooled output, [per block: (B, heads, L, L)])."""
    b = x.shape[0]
    tokens = visual.conv1(x).flatten(2).transpose(1, 2)                       # (B, N, D)
    cls = visual.class_embedding.expand(b, 1, -1)
    h = torch.cat([cls, tokens], 1) + visual.positional_embedding
    h = visual.ln_pre(h)
    attentions = []
    for blk in visual.transformer.resblocks:
        mha = blk.attn
        e, heads = mha.embed_dim, mha.num_heads
        d = e // heads
        y = blk.ln_1(h)
        q = y @ mha.in_proj_weight[:e].T + mha.in_proj_bias[:e]
        k = y @ mha.in_proj_weight[e:2 * e].T + mha.in_proj_bias[e:2 * e]
        v = y @ mha.in_proj_weight[2 * e:].T + mha.in_proj_bias[2 * e:]
        probs, outs = [], []
        for i in range(heads):
            s = q[..., i * d:(i + 1) * d] @ k[..., i * d:(i + 1) * d].transpose(1, 2) / math.sqrt(d)
            p = torch.exp(s - s.max(-1, keepdim=True).values)
            p = p / p.sum(-1, keepdim=True)
            probs.append(p)
            outs.append(p @ v[..., i * d:(i + 1) * d])
        attentions.append(torch.stack(probs, 1))
        h = h + torch.cat(outs, -1) @ mha.out_proj.weight.T + mha.out_proj.bias
        h = h + blk.mlp(blk.ln_2(h))
    pooled = visual.ln_post(h[:, 0]) @ visual.proj
    return pooled, attentions


def brute_force_rollout(attentions, grid):
    """Rollout by its definition: per image, head-averaged attention, 0.5 A + 0.5 I, multiplied
    from the first block on; the CLS row over the patches, normalised."""
    maps = []
    for img in range(attentions[0].shape[0]):
        n = attentions[0].shape[-1]
        r = torch.eye(n, dtype=torch.float64)
        for a in attentions:
            mean = sum(a[img, i].double() for i in range(a.shape[1])) / a.shape[1]
            r = (0.5 * mean + 0.5 * torch.eye(n, dtype=torch.float64)) @ r
        row = r[0, 1:]
        maps.append((row / row.sum()).reshape(grid))
    return torch.stack(maps)


def test_rollout_equals_a_brute_force_rollout_from_the_weights(vit):
    visual = vit.model.visual
    assert len(visual.transformer.resblocks) == 2
    x = images()
    with torch.no_grad():
        pooled, attentions = brute_force_vit(visual, x)
        assert torch.allclose(pooled, visual(x), atol=1e-5)  # the written-out forward is the model's
        got = rollout_maps(visual, x)
        with AttentionRecorder(visual) as rec:
            visual(x)
    for mine, theirs in zip(rec.maps, attentions):
        assert torch.allclose(mine, theirs, atol=1e-6)
    want = brute_force_rollout(attentions, (8, 8)).float()
    assert got.shape == (3, 8, 8)                              # the patch grid of 64 px / 8 px patches
    assert (got >= 0).all() and torch.allclose(got.sum((1, 2)), torch.ones(3), atol=1e-6)
    assert torch.allclose(got, want, atol=1e-6)
    first = rollout_maps(visual, x, upto=1)                    # a shallower layer: another map
    assert torch.allclose(first, brute_force_rollout(attentions[:1], (8, 8)).float(), atol=1e-6)
    assert not torch.allclose(first, got, atol=1e-4)


def test_hooks_leave_outputs_bit_identical(vit, rn):
    visual = vit.model.visual
    x = images(2, seed=1)
    adapter = VisionAdapter(vit)
    with torch.no_grad():
        plain, plain_feats = visual(x), adapter(x)
        with AttentionRecorder(visual) as rec:
            hooked, hooked_feats = visual(x), adapter(x)
        after = visual(x)
    assert torch.equal(plain, hooked) and torch.equal(plain, after)
    for f in ("mid", "final", "proj", "tokens"):
        assert torch.equal(getattr(plain_feats, f), getattr(hooked_feats, f))
    assert len(rec.maps) == 4 and rec.maps[0].shape == (2, 2, 65, 65)   # 2 blocks × 2 forwards
    assert all(not b.attn._forward_pre_hooks for b in visual.transformer.resblocks)  # removed again
    with pytest.raises(TypeError, match="ResNet"):
        AttentionRecorder(rn.model.visual)


# --------------------------------------------------------------------------- Grad-CAM

def test_similarity_gradcam_shape_and_target_dependence(vit, rn):
    x = images(2, seed=2)
    maps = {}
    for clip, layer in ((vit, "block 2"), (vit, "block 1"), (rn, "layer4"), (rn, "layer3")):
        adapter = VisionAdapter(clip)
        with torch.no_grad():
            feats = F.normalize(adapter.encode(images(2, seed=3)), dim=1)
        a = similarity_gradcam(adapter, adapter.encode, clip.model.visual, x, feats, layer)
        b = similarity_gradcam(adapter, adapter.encode, clip.model.visual, x, feats.flip(0), layer)
        assert a.shape == (2, 64, 64) and (a >= 0).all() and a.max() <= 1 + 1e-6
        assert not torch.allclose(a, b, atol=1e-3), (clip.name, layer)  # another target, another map
        assert all(p.grad is None and p.requires_grad for p in adapter.parameters())  # model left as it was
        maps[layer] = a
    assert not torch.allclose(maps["layer3"], maps["layer4"], atol=1e-3)  # the layer asked for
    assert not torch.allclose(maps["block 1"], maps["block 2"], atol=1e-3)
    with pytest.raises(ValueError, match="choose one of layer3, layer4"):
        similarity_gradcam(adapter, adapter.encode, rn.model.visual, x, feats, "block 1")


def test_similarity_gradcam_on_the_cnn_baselines_torchvision_resnet():
    """The baseline has no open_clip tower: its torchvision ResNet is the tower (layer3/layer4),
    and the map still depends on the target."""
    from torch import nn
    from clipfh_utils.explain.maps import image_tower
    from clipfh_utils.methods.cnn_baseline.backbone import _tiny_resnet
    torch.manual_seed(0)
    net = _tiny_resnet()
    net.fc = nn.Identity()
    net.eval()

    class Clip:  # what image_tower needs of the baseline's backbone object
        model = net
    tower = image_tower(net, Clip())
    assert tower is net and not _baseline_entry(tower).is_vit
    x = images(2, seed=2)
    with torch.no_grad():
        feats = F.normalize(net(images(2, seed=3)), dim=1)
    a = similarity_gradcam(net, net, tower, x, feats, "layer4")
    b = similarity_gradcam(net, net, tower, x, feats.flip(0), "layer4")
    assert a.shape == (2, 64, 64) and (a >= 0).all()
    assert not torch.allclose(a, b, atol=1e-3)


def _baseline_entry(visual):
    entry = ModelEntry("m", "baseline", visual, visual, (0.5,) * 3, (0.5,) * 3, None, None, embed=visual)
    assert entry.methods() == ["Grad-CAM"] and entry.layers("Grad-CAM") == ["layer3", "layer4"]
    return entry


def test_missing_opencv_is_a_clear_error(vit, monkeypatch):
    for mod in [m for m in sys.modules if m.startswith("pytorch_grad_cam")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import fails as without libGL
    adapter = VisionAdapter(vit)
    with pytest.raises(ExplainDependencyError, match="grad-cam.*opencv-python-headless"):
        similarity_gradcam(adapter, adapter.encode, vit.model.visual, images(1), torch.ones(1, 64))


# --------------------------------------------------------------------------- Stage 3 and the map source

class FakePromptSG(nn.Module):
    """Stands in for the Stage 3 model: an embed and cross-attention maps over the patch grid."""

    def __init__(self, clip):
        super().__init__()
        self.image = VisionAdapter(clip)
        self.query = nn.Parameter(torch.randn(clip.model.visual.transformer.width))

    def embed(self, x):
        return self.image(x).proj

    def attention_maps(self, x):
        f = self.image(x)
        return (f.tokens @ self.query).softmax(-1).reshape(-1, *f.grid)


def _result(name, stage, clip, model, ev_images, rows):
    with torch.no_grad():
        feats = F.normalize(model.embed(ev_images.float() / 255), dim=1)
    ev = SimpleNamespace(bank=FeatureBank(feats, {r.image_name: i for i, r in enumerate(rows)}), images=ev_images)
    return SimpleNamespace(name=name, experiment=SimpleNamespace(stage=stage), model=model.eval(), clip=clip,
                           cfg=SimpleNamespace(seeds=[0]), evals={(0, "composed"): ev, (0, "fixed"): ev})


def test_stage3_cross_attention_is_picked_up_from_the_model(vit, rn, tiny_dataset):
    from clipfh_utils.data.handinfo import load_handinfo
    from clipfh_utils.data.protocol import build_protocol
    from clipfh_utils.methods.zero_shot import ZeroShotModel
    from clipfh_utils.report.explorer import MapExplorer
    csv, _ = tiny_dataset
    proto = build_protocol(load_handinfo(csv, check_sha256=False), "dorsal right", 0, 1)
    rows = proto.eval_rows()
    ev_images = torch.randint(0, 256, (len(rows), 3, 64, 64), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0))
    results = [_result("zs_vit", "stage1", vit, ZeroShotModel(vit), ev_images, rows),
               _result("zs_rn", "stage1", rn, ZeroShotModel(rn), ev_images, rows),
               _result("psg", "stage3", vit, FakePromptSG(vit), ev_images, rows)]
    entries = entries_from_results(results)
    assert [e.methods() for e in entries] == [[ROLLOUT, GRADCAM], [GRADCAM], [ROLLOUT, GRADCAM, CROSS]]
    assert entries[2].visual is vit.model.visual
    source = MapSource.for_split(entries, proto, 0)
    assert all(q.label == g.label for q, g in zip(source.queries, source.matches))
    cross = source.maps("psg", CROSS)
    assert cross.shape == (len(source.queries), 8, 8)
    assert torch.allclose(as_distribution(cross).sum((1, 2)), torch.ones(len(cross)), atol=1e-5)
    images_, cols, titles = source.side_by_side(source.pick(2), "tiny-vit")
    assert list(cols) == ["zs_vit\nattention rollout", "zs_vit\nGrad-CAM", "psg\nattention rollout",
                          "psg\nGrad-CAM", "psg\ncross-attention"]
    labels = np.zeros((len(source.queries), 64, 64), dtype=np.uint8)
    labels[:, :, 32:] = 1                                       # right half: "fingers"
    table, area = source.region_table(labels)
    assert "psg · cross-attention" in table.index and len(table) == 6
    assert area["background"] == pytest.approx(50) and area["fingers"] == pytest.approx(50)
    want = region_shares(cross, labels)[:, 1].mean() * 100
    assert table.loc["psg · cross-attention", "fingers"] == pytest.approx(want)
    ex = MapExplorer(source)
    ex.model.value = "psg"
    ex.method.value = CROSS
    assert ex.layer.value == "interaction" and ex.last == "explorer_map"
    ex.model.value = "zs_rn"
    assert list(ex.method.options) == [GRADCAM] and ex.layer.value == "layer4"


# --------------------------------------------------------------------------- regions

def test_region_shares_against_a_hand_computed_case():
    labels = np.array([[[0, 1], [2, 3]]], dtype=np.uint8)
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert region_shares(maps, labels)[0].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.0])
    # a 1 x 2 map over a 2 x 4 image: bilinear (half-pixel centres) gives columns 1, 1.5, 2.5, 3;
    # fingers (left half) hold 2 * 2.5 = 5 of 16, knuckles (right half) 2 * 5.5 = 11
    wide = np.array([[[1, 1, 2, 2], [1, 1, 2, 2]]], dtype=np.uint8)
    coarse = torch.tensor([[[1.0, 3.0]]])
    assert region_shares(coarse, wide)[0].tolist() == pytest.approx([0.0, 5 / 16, 11 / 16, 0.0, 0.0])
    assert np.isnan(region_shares(torch.zeros(1, 2, 2), labels)).all()


def _plain(nuis: Nuisance, rgb) -> Nuisance:
    return Nuisance(nuis.rotation_deg, nuis.scale, nuis.translate, 1.0, 1.0, (1.0, 1.0, 1.0), rgb, rgb,
                    0.0, nuis.finger_jitter_deg, 0.0, 0.0, 0)


def test_synthetic_regions_follow_the_drawn_hand():
    """Pixels that change with the background colour are background; the rest is the hand."""
    for i, aspect in enumerate(["dorsal right", "palmar left", "dorsal left"]):
        ident, nuis = identity_from_id(f"{1100 + i:07d}", 0), nuisance_from_name(f"Hand_{i:07d}.jpg", 0)
        black = np.asarray(render_hand(ident, _plain(nuis, (0, 0, 0)), aspect, False, (160, 120))).astype(int)
        white = np.asarray(render_hand(ident, _plain(nuis, (255, 255, 255)), aspect, False, (160, 120))).astype(int)
        drawn = np.abs(white - black).max(-1) < 128               # mostly hand (edges are mixed)
        labels = hand_regions(ident, nuis, aspect, (160, 120))
        assert labels.shape == (120, 160)
        assert ((labels > 0) == drawn).mean() > 0.98, aspect
        present = set(np.unique(labels[labels > 0]).tolist())
        assert present == {1, 2, 3, 4}, (aspect, present)          # fingers, knuckles, palm, wrist
        ys = np.nonzero(labels == REGION_NAMES.index("wrist"))[0]
        fy = np.nonzero(labels == REGION_NAMES.index("fingers"))[0]
        assert ys.mean() > fy.mean()                              # the wrist is below the fingers


def test_drawn_knuckle_wrinkles_and_palm_creases_fall_in_their_regions():
    """Lines the renderer draws where the anatomy is: dorsal knuckle wrinkles (found by rendering
    the hand again with another wrinkle strength) must be labelled knuckles, palmar creases
    (rendered with and without them) the palm, not the wrist."""
    for i, aspect in enumerate(["palmar right", "palmar left", "dorsal right", "dorsal left"]):
        ident = identity_from_id(f"{1100 + i:07d}", 0)
        nuis = _plain(nuisance_from_name(f"Hand_{i:07d}.jpg", 0), (255, 255, 255))
        if aspect.startswith("palmar"):
            other = dataclasses.replace(ident, palm_creases=())
        else:
            other = dataclasses.replace(ident, knuckle_strength=0.15 if ident.knuckle_strength > 0.5 else 1.0)
        a = np.asarray(render_hand(ident, nuis, aspect, False, (320, 240))).astype(int)
        b = np.asarray(render_hand(other, nuis, aspect, False, (320, 240))).astype(int)
        lines = np.abs(a - b).max(-1) > 20
        share = np.bincount(hand_regions(ident, nuis, aspect, (320, 240))[lines], minlength=5) / lines.sum()
        assert lines.sum() > 100, aspect
        if aspect.startswith("palmar"):
            assert share[REGION_NAMES.index("back of hand / palm")] > 0.75 and share[REGION_NAMES.index("wrist")] < 0.1, \
                (aspect, share)
        else:
            assert share[REGION_NAMES.index("knuckles")] > 0.95, (aspect, share)


def test_dataset_regions_use_the_generators_seed(tiny_dataset, tmp_path):
    from clipfh_utils.data.datasets import HandDataset
    from clipfh_utils.data.handinfo import load_handinfo
    from clipfh_utils.data.protocol import build_protocol
    from clipfh_utils.explain.regions import dataset_regions
    csv, hands = tiny_dataset                                      # generated with seed 3
    ds = HandDataset("synthetic", "dorsal right", csv, hands, tmp_path, tmp_path, "SYNTHETIC")
    rows = build_protocol(load_handinfo(csv, check_sha256=False), "dorsal right", 0, 1).test[:4]
    labels = dataset_regions(ds, rows, torch.zeros(len(rows), 3, 48, 64, dtype=torch.uint8))
    assert labels.shape == (4, 48, 64)
    for lab, r in zip(labels, rows):
        right = hand_regions(identity_from_id(r.person_id, 3), nuisance_from_name(r.image_name, 3), r.aspect,
                             (96, 72))                           # the files are 96 x 72
        wrong = hand_regions(identity_from_id(r.person_id, 0), nuisance_from_name(r.image_name, 0), r.aspect,
                             (96, 72))
        assert (lab == np.asarray(Image.fromarray(right).resize((64, 48), Image.Resampling.NEAREST))).all()
        assert (right != wrong).any()                             # the seed matters, and the stamp's is used


def test_photo_regions_agree_with_the_geometry_on_plain_backgrounds():
    """The annotation-free split for real photos, checked where the truth is known: synthetic
    hands on near-white paper (as in 11k Hands), as drawn (arm at the bottom), upside down and on
    their side, so the split has to find the arm's end itself."""
    turns = {"upright": lambda a: a, "upside down": lambda a: a[::-1], "on its side": lambda a: np.rot90(a)}
    fg, region = {t: [] for t in turns}, {t: [] for t in turns}
    n = 0
    for i in range(200):
        nuis = nuisance_from_name(f"Hand_{i:07d}.jpg", 0)
        _, s, v = colorsys.rgb_to_hsv(*[c / 255 for c in nuis.background_rgb])
        if s > 0.1 or v < 0.8:
            continue
        ident = identity_from_id(f"{1100 + i:07d}", 0)
        img = np.asarray(render_hand(ident, nuis, "dorsal right", False, (160, 120)))
        truth = hand_regions(ident, nuis, "dorsal right", (160, 120))
        for name, turn in turns.items():
            t, est = turn(truth), photo_regions(np.ascontiguousarray(turn(img)))
            fg[name].append(((t > 0) == (est > 0)).mean())
            region[name].append((t[t > 0] == est[t > 0]).mean())
        n += 1
        if n == 20:
            break
    assert n == 20
    for name in turns:
        assert np.mean(fg[name]) > 0.95 and np.median(region[name]) > 0.6, (name, np.mean(fg[name]), np.median(region[name]))
