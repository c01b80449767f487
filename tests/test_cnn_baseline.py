"""The CNN baseline (ResNet BoT): last stride 1, BNNeck placement, the loss terms against hand
computations, gradient flow and the optimiser groups, offline weights with clear errors, and a
tiny model trained by the pipeline into the same comparison table as the CLIP stages."""
import hashlib
import json

import pytest
import torch
from torch import nn

from clipfh_utils.backbones.loading import ClipModel
from clipfh_utils.backbones.weights import WeightsMismatchError, WeightsNotFoundError
from clipfh_utils.config import ConfigError, build
from clipfh_utils.methods import BuildContext, get_method
from clipfh_utils.methods.cnn_baseline import backbone as bb
from clipfh_utils.methods.cnn_baseline.config import CnnBaselineCfg
from clipfh_utils.methods.cnn_baseline.model import bot_terms
from clipfh_utils.training.data import TrainData
from clipfh_utils.training.losses import weighted_total

METHOD = get_method("cnn_baseline")


def tiny_cfg(**train) -> CnnBaselineCfg:
    return build(CnnBaselineCfg, {"name": "t", "method": "cnn_baseline", "image_size": [64, 64],
                                  "backbone": {"name": "tiny-resnet", "weights": None, "last_stride": 1},
                                  "train": {"p": 4, "k": 2, **train}})


def tiny_model(cfg: CnnBaselineCfg, n_classes: int = 4):
    backbone = METHOD.load_backbone(cfg, torch.device("cpu"))
    ctx = BuildContext(backbone, torch.device("cpu"), 0, torch.Generator().manual_seed(0), False)
    torch.manual_seed(0)
    return METHOD.build(cfg, ctx, n_classes), ctx


def layer_sizes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, int]]:
    sizes = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[2:])))
             for n in ("layer3", "layer4")]
    model(x)
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize("name", ["tiny-resnet", "resnet18", "resnet50"])
def test_last_stride_one_keeps_layer3_resolution_with_the_same_weights(name):
    x = torch.zeros(1, 3, 64, 64)
    s1, s2 = bb.load_resnet(name, last_stride=1), bb.load_resnet(name, last_stride=2)
    # 64 -> conv1 /2 -> maxpool /2 -> layer2 /2 -> layer3 /2 = 4x4; layer4 /2 = 2x2, or 4x4 at stride 1
    assert layer_sizes(s2.model, x) == {"layer3": (4, 4), "layer4": (2, 2)}
    assert layer_sizes(s1.model, x) == {"layer3": (4, 4), "layer4": (4, 4)}
    sd1, sd2 = s1.model.state_dict(), s2.model.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert s1.model(x).shape == (1, s1.feature_dim) and s1.feature_dim == {"tiny-resnet": 128, "resnet18": 512,
                                                                          "resnet50": 2048}[name]
    assert s1.mean == (0.485, 0.456, 0.406) and s1.std == (0.229, 0.224, 0.225) and not s1.pretrained


def test_bnneck_placement_and_loss_terms_against_hand_computation():
    cfg = tiny_cfg(label_smoothing=0.1, triplet_margin=0.3, loss_weights={"id": 1.0, "triplet": 0.5})
    model, _ = tiny_model(cfg)
    model.train()
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    feat, logits = model(x, labels)
    assert torch.allclose(feat, model.backbone(x), atol=1e-5)  # the triplet sees the pooled feature
    bn = model.head.bn  # the ID loss sees the classifier on the batch-normalised feature
    normed = (feat - feat.mean(0)) / torch.sqrt(feat.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(logits, normed @ model.head.classifier.weight.T, atol=1e-4)

    feat, logits = feat.detach(), logits.detach()
    terms = bot_terms(feat, logits, labels, cfg, None)
    eps, n_cls = 0.1, logits.shape[1]
    logp = logits.log_softmax(1)
    id_hand = sum((1 - eps) * -logp[i, labels[i]] + eps * -logp[i].sum() / n_cls for i in range(8)) / 8
    tri_hand = 0.0
    for a in range(8):
        d = [torch.dist(feat[a], feat[j]) for j in range(8)]
        hardest_pos = max(d[j] for j in range(8) if labels[j] == labels[a])
        hardest_neg = min(d[j] for j in range(8) if labels[j] != labels[a])
        tri_hand += max(hardest_pos - hardest_neg + 0.3, 0.0) / 8
    assert set(terms) == {"id", "triplet"} and tri_hand > 0
    assert terms["id"].item() == pytest.approx(float(id_hand), rel=1e-5)
    assert terms["triplet"].item() == pytest.approx(float(tri_hand), rel=1e-4, abs=1e-6)
    assert weighted_total(terms, cfg.train.loss_weights).item() == pytest.approx(float(id_hand + 0.5 * tri_hand), rel=1e-4)
    model.eval()
    assert torch.allclose(model.embed(x), bn(model.backbone(x)))
    model.neck_feat = "before"
    assert torch.allclose(model.embed(x), model.backbone(x))


def test_centre_loss_is_off_by_default_and_optional():
    model, _ = tiny_model(tiny_cfg())
    assert model.center is None
    cfg = tiny_cfg(loss_weights={"id": 1.0, "triplet": 1.0, "center": 5e-4})
    model, _ = tiny_model(cfg)
    feat = torch.randn(4, 128)
    labels = torch.tensor([0, 1, 2, 3])
    terms = bot_terms(feat, torch.randn(4, 4), labels, cfg, model.center)
    centres = model.center.centers.detach()
    assert terms["center"].item() == pytest.approx(sum(float(((feat[i] - centres[labels[i]]) ** 2).sum()) for i in range(4)) / 4)


def test_one_training_step_reaches_every_trainable_parameter_and_keeps_the_bnneck_bias():
    cfg = tiny_cfg(lr=1e-2, bias_lr_factor=2.0, weight_decay=5e-4, weight_decay_bias=1e-4,
                   loss_weights={"id": 1.0, "triplet": 1.0, "center": 1e-3})
    model, ctx = tiny_model(cfg)
    g = torch.Generator().manual_seed(0)
    data = TrainData(torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8, generator=g),
                     torch.arange(4).repeat_interleave(4), ["1", "2", "3", "4"])
    plan = METHOD.plan(cfg, model, data, ctx)
    (phase,) = list(plan.phases)
    opt = phase.optimizer
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    in_opt = [id(p) for grp in opt.param_groups for p in grp["params"]]
    assert sorted(in_opt) == sorted(trainable) and len(in_opt) == len(set(in_opt))  # each once, none missing
    assert not model.head.bn.bias.requires_grad and id(model.head.bn.bias) not in in_opt
    groups = {grp["name"]: grp for grp in opt.param_groups}
    assert set(groups) == {"backbone", "backbone_bias", "heads", "center"}
    assert groups["backbone_bias"]["base_lr"] == pytest.approx(2e-2) and groups["backbone_bias"]["weight_decay"] == 1e-4
    assert groups["center"]["base_lr"] == cfg.train.center_lr and groups["center"]["weight_decay"] == 0.0

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for m in phase.train_modules:
        m.train()
    total, terms = phase.loss(*phase.inputs(phase.batches()[0]))
    opt.zero_grad()
    total.backward()
    assert set(terms) == {"id", "triplet", "center"} and torch.isfinite(total)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert model.head.bn.bias.grad is None
    opt.step()
    after = dict(model.named_parameters())
    assert not torch.equal(after["backbone.conv1.weight"], before["backbone.conv1.weight"])
    assert not torch.equal(after["head.classifier.weight"], before["head.classifier.weight"])
    assert torch.equal(after["head.bn.bias"], before["head.bn.bias"])


def test_schedule_is_the_recipes_warmup_multistep():
    cfg = build(CnnBaselineCfg, {"name": "r"})  # the recipe's defaults: ResNet-50, IMAGENET1K_V1, last stride 1
    assert (cfg.backbone.name, cfg.backbone.weights, cfg.backbone.last_stride) == ("resnet50", "IMAGENET1K_V1", 1)
    t = cfg.train
    assert (t.epochs, t.p, t.k, t.lr, t.milestones, t.warmup_epochs, t.warmup_factor) == \
           (120, 16, 4, 3.5e-4, [40, 70], 10, 0.01)
    assert t.loss_weights == {"id": 1.0, "triplet": 1.0, "center": 0.0} and t.label_smoothing == 0.1
    model, ctx = tiny_model(tiny_cfg())
    data = TrainData(torch.zeros(8, 3, 64, 64, dtype=torch.uint8), torch.arange(4).repeat_interleave(2), list("abcd"))
    (phase,) = list(METHOD.plan(tiny_cfg(), model, data, ctx).phases)  # the recipe's schedule, P=4
    # epoch e (1-based): warm-up 0.01 -> 1 over 10 epochs, then x0.1 at 40 and at 70
    expected = {1: 0.01 + 0.99 * 0.1, 5: 0.01 + 0.99 * 0.5, 10: 1.0, 39: 1.0, 40: 0.1, 69: 0.1, 70: 0.01, 120: 0.01}
    for e, f in expected.items():
        assert phase.lr_factor(e) == pytest.approx(f), e


def test_validate_rejects_clip_settings_and_unknown_loss_terms():
    with pytest.raises(ConfigError, match="quick_gelu: a CLIP setting"):
        METHOD.validate(build(CnnBaselineCfg, {"backbone": {"name": "resnet50", "quick_gelu": True}}), "x")
    with pytest.raises(ConfigError, match=r"x.train.loss_weights.i2t: unknown loss term"):
        METHOD.validate(tiny_cfg(loss_weights={"i2t": 1.0}), "x")


# --------------------------------------------------------------------------- weights

def save_state(path, name="resnet18", seed=5) -> str:
    torch.manual_seed(seed)
    torch.save(bb.ARCHS[name][0](weights=None).state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_weights_say_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("CLIPFH_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsNotFoundError) as e:
        bb.load_resnet("resnet50", "IMAGENET1K_V1")
    msg = str(e.value)
    assert "\n" not in msg and "resnet50-0676ba61.pth" in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg and "IMAGENET1K_V1" in msg
    with pytest.raises(WeightsNotFoundError, match=r"'IMAGENET9K': neither a file nor a torchvision weights tag "
                                                   r"of resnet50 \(IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT\)"):
        bb.load_resnet("resnet50", "IMAGENET9K")
    with pytest.raises(WeightsNotFoundError, match="tiny-resnet has no pretrained weights"):
        bb.load_resnet("tiny-resnet", "IMAGENET1K_V1")
    with pytest.raises(ValueError, match="unknown CNN backbone 'resnet5'"):
        bb.load_resnet("resnet5")


def test_weights_from_torchvisions_cache_are_checked_and_loaded(tmp_path, monkeypatch):
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("CLIPFH_WEIGHTS_DIR", raising=False)
    damaged = ckpt / "resnet18-f37072fd.pth"  # torchvision's own file name for IMAGENET1K_V1
    save_state(damaged)
    with pytest.raises(WeightsMismatchError, match=r"sha256 starts with .{8}, torchvision's resnet18 IMAGENET1K_V1 "
                                                   r"file with f37072fd: damaged or another file"):
        bb.load_resnet("resnet18", "IMAGENET1K_V1")
    damaged.unlink()
    tmp_file = tmp_path / "w.pth"
    sha = save_state(tmp_file)
    good = ckpt / f"resnet18-{sha[:8]}.pth"
    tmp_file.rename(good)
    monkeypatch.setattr(bb, "weights_file_name", lambda name, tag: ("IMAGENET1K_V1", good.name, "url"))
    loaded = bb.load_resnet("resnet18", "IMAGENET1K_V1", last_stride=1)
    assert loaded.pretrained and loaded.weights_sha256 == sha and loaded.weights.startswith("IMAGENET1K_V1 (")
    assert loaded.label == "resnet18" and loaded.record()["weights_sha256"] == sha
    ref = torch.load(good, weights_only=True)
    assert torch.equal(loaded.model.conv1.weight, ref["conv1.weight"])
    assert torch.equal(loaded.model.layer4[0].conv1.weight, ref["layer4.0.conv1.weight"])


def test_a_weights_file_by_path_and_one_of_another_architecture(tmp_path):
    f = tmp_path / "r18.pth"
    sha = save_state(f)
    assert bb.load_resnet("resnet18", str(f)).weights_sha256 == sha  # a path: no name convention needed
    with pytest.raises(WeightsMismatchError, match=r"r18.pth: does not fit torchvision resnet50 .*the file looks like "
                                                   r"torchvision resnet18: give the backbone name"):
        bb.load_resnet("resnet50", str(f))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatchError, match="not a readable state-dict file"):
        bb.load_resnet("resnet18", str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsNotFoundError, match="weights file not found"):
        bb.load_resnet("resnet18", str(tmp_path / "nope.pth"))


def test_default_backbone_of_a_method_is_clip():
    cfg = build(get_method("zero_shot").config_cls, {"name": "z", "backbone": {"name": "tiny-vit"}})
    assert isinstance(get_method("zero_shot").load_backbone(cfg, torch.device("cpu")), ClipModel)
    assert isinstance(METHOD.load_backbone(tiny_cfg(), torch.device("cpu")), bb.CnnBackbone)


# --------------------------------------------------------------------------- in the pipeline

@pytest.mark.slow
def test_tiny_baseline_trains_and_reports_beside_the_clip_stages(tmp_path):
    from clipfh_utils import load_run
    from clipfh_utils.pipeline import open_run
    from clipfh_utils.report.results import comparison_table, invocation_metrics

    items = ["experiments=[stage1, cnn_baseline/demo_tiny_resnet]", "backbones=[{name: tiny-vit}]",
             "protocol.n_splits=2", "demo_tiny_resnet.train.epochs=6", "demo_tiny_resnet.train.monitor_every=0"]
    run = open_run("demo", tmp_path / "out", items)
    (res,) = run.run_stage("baseline", progress=False)
    run.run_stage("stage1", progress=False)
    assert res.trained_seeds == [0] and res.experiment.stage == "baseline"
    epochs = res.logs("epoch")
    assert epochs["phase"].eq("train").all() and epochs["epoch"].max() == 6
    assert epochs["total"].iloc[-1] < epochs["total"].iloc[0]
    record = json.loads((res.run_dir / "run.json").read_text())
    assert record["backbone"]["arch"] == "torchvision tiny-resnet" and record["backbone"]["mean"] == [0.485, 0.456, 0.406]
    assert record["train_ids"] == sorted({r.person_id for r in run.dataset.protocol().train}, key=int)
    table = comparison_table(invocation_metrics(run.run_dir, run.invocation), "clipfh").set_index("model")
    row = table.loc["demo_tiny_resnet"]
    assert row["stage"] == "baseline" and row["method"] == "ResNet BoT (Luo et al. 2019)"
    assert row["backbone"] == "tiny-resnet" and "fine-tuned from random init" in row["weights"]
    assert {"baseline", "stage1"} == set(table["stage"]) and 0 < row["mAP_mean"] <= 100

    again = open_run("demo", tmp_path / "out", items).run_stage("baseline", progress=False)[0]
    assert again.trained_seeds == [] and again.per_split.equals(res.per_split)  # loaded, not retrained
    model = load_run(res.run_dir, device="cpu")
    ev = res.first_eval()
    assert torch.allclose(model.embed(ev.images[:5]), ev.bank.features[:5], atol=1e-5)
