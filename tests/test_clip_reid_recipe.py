"""CLIP-ReID's recipe as the official code has it (reference notes, section 4), tested through the
model and the plan the method builds: each test is written from the recipe and fails when that part
of it is wrong (docs/methods.md lists the breakage each one catches)."""
import pytest
import torch

from clipfh_utils.backbones import load_clip
from clipfh_utils.backbones.features import embed_images, normalize
from clipfh_utils.config import ConfigError, build, identity_dict
from clipfh_utils.methods.clip_reid import METHOD
from clipfh_utils.methods.clip_reid.config import ClipReidCfg
from clipfh_utils.methods.clip_reid.model import reid_terms
from clipfh_utils.methods.clip_reid.prompts import encode_all_identities
from clipfh_utils.training.data import TrainData
from clipfh_utils.training.loop import Trainer

from .test_clip_reid import CPU, setup, tiny_cfg, tiny_data
from .test_training_parts import smoothed_ce_by_hand, triplet_by_hand


def visible_bnneck(backbone):
    """A tiny model whose BNNeck statistics and affine are far from the identity, so BN'd and raw
    features differ: (cfg, data, ctx, model)."""
    cfg = tiny_cfg(backbone)
    data = tiny_data()
    ctx, model = setup(cfg, data)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for head in (model.image.head, model.image.head_proj):
            d = head.bn.num_features
            head.bn.running_mean.copy_(torch.randn(d, generator=g))
            head.bn.running_var.copy_(torch.rand(d, generator=g) * 3 + 0.5)
            head.bn.weight.copy_(torch.rand(d, generator=g) + 0.5)
            head.bn.bias.copy_(torch.randn(d, generator=g))
    return cfg, data, ctx, model


@pytest.mark.parametrize("backbone", ["tiny-vit", "tiny-rn"])
def test_triplet_and_i2t_see_the_pre_bnneck_features_and_id_the_bnd_ones(backbone):
    cfg, data, ctx, model = visible_bnneck(backbone)
    model.image.train()
    x, y = normalize(data.images[:8], ctx.clip.mean, ctx.clip.std), data.labels[:8]
    text = torch.randn(data.n_classes, model.image.dims[2], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.image(x, y)
        terms = reid_terms(out, y, text, cfg, None)
        f = model.image.backbone(x)  # the encoder's own features, nothing after them
        bnd = [torch.nn.functional.batch_norm(v, None, None, h.bn.weight, h.bn.bias, training=True)
               for v, h in ((f.final, model.image.head), (f.proj, model.image.head_proj))]
    for got, raw in zip(out.feats, (f.mid, f.final, f.proj)):
        assert torch.allclose(got, raw, atol=1e-5)
    assert not torch.allclose(bnd[0], f.final, atol=1e-2)  # the BN visibly changes its input
    triplet = sum(triplet_by_hand(v, y) for v in (f.mid, f.final, f.proj))
    assert terms["triplet"].item() == pytest.approx(triplet, abs=1e-4)
    assert terms["i2t"].item() == pytest.approx(smoothed_ce_by_hand(f.proj @ text.T, y, 0.1), abs=1e-4)
    classifiers = (model.image.head.classifier, model.image.head_proj.classifier)
    ident = sum(smoothed_ce_by_hand(c(v), y, 0.1) for c, v in zip(classifiers, bnd))
    assert terms["id"].item() == pytest.approx(ident, abs=1e-4)


@pytest.mark.parametrize("backbone", ["tiny-vit", "tiny-rn"])
def test_the_retrieval_embedding_is_the_normalised_concat_of_pre_bnneck_final_and_proj(backbone):
    cfg, data, ctx, model = visible_bnneck(backbone)
    model.image.eval()
    imgs = data.images[:6]
    got = embed_images(METHOD.embedders(cfg, model)[""], imgs, ctx.clip.mean, ctx.clip.std, CPU, amp=False)
    with torch.no_grad():
        f = model.image.backbone(normalize(imgs, ctx.clip.mean, ctx.clip.std))
        ref = torch.cat([f.final, f.proj], 1)
        bnd = torch.cat([model.image.head.bn(f.final), model.image.head_proj.bn(f.proj)], 1)
    ref = ref / ref.norm(dim=1, keepdim=True)
    assert got.shape == (6, model.image.dims[1] + model.image.dims[2])
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, bnd / bnd.norm(dim=1, keepdim=True), atol=1e-2)


def spy(phases, seen):
    for phase in phases:
        seen.append(phase)
        yield phase


def uneven_data():
    """6 identities with 2..7 images: P x K must hold even where an identity has fewer than K."""
    g = torch.Generator().manual_seed(0)
    counts = [2, 3, 4, 5, 6, 7]
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    images = torch.randint(0, 256, (len(labels), 3, 64, 64), dtype=torch.uint8, generator=g)
    first = torch.tensor([0] + torch.tensor(counts).cumsum(0)[:-1].tolist())
    return TrainData(images, labels, [f"{i:07d}" for i in range(6)], images[first].clone(), torch.arange(6))


def test_every_finetune_batch_the_plan_builds_is_p_identities_by_k_images(tmp_path):
    cfg = tiny_cfg(p=3, k=4)
    data = uneven_data()
    ctx, model = setup(cfg, data)
    seen = []
    plan = METHOD.plan(cfg, model, data, ctx)
    Trainer(tmp_path, CPU, plan.state, ctx.generator, amp=False).fit(spy(plan.phases, seen))
    finetune = [p for p in seen if p.name == "finetune"][0]
    for _ in range(3):  # three epochs' draws
        batches = finetune.batches()
        assert len(batches) > 0
        for idx in batches:
            ids, counts = data.labels[idx].unique(return_counts=True)
            assert len(idx) == 12 and len(ids) == 3 and (counts == 4).all(), data.labels[idx].tolist()


def test_finetuning_uses_the_text_features_learnt_by_the_prompt_stage(tmp_path):
    cfg = tiny_cfg()
    data = tiny_data()
    ctx, model = setup(cfg, data)
    before = encode_all_identities(model.prompts, model.text, data.n_classes)
    seen = []
    plan = METHOD.plan(cfg, model, data, ctx)
    Trainer(tmp_path, CPU, plan.state, ctx.generator, amp=False).fit(spy(plan.phases, seen))
    finetune = [p for p in seen if p.name == "finetune"][0]
    used = finetune.loss_args[2]  # (model, cfg, frozen identity text features, all ids)
    after = encode_all_identities(model.prompts, model.text, data.n_classes)
    assert not torch.allclose(before, after, atol=1e-4)  # the prompt stage learnt something
    assert torch.allclose(used, after, atol=1e-6)
    x, y = normalize(data.images[:4], ctx.clip.mean, ctx.clip.std), data.labels[:4]
    with torch.no_grad():  # and they are what the i2t term scores against
        _, terms = finetune.objective(x, y)
        out = model.image(x, y)
    assert terms["i2t"].item() == pytest.approx(smoothed_ce_by_hand(out.proj @ after.T, y, 0.1), abs=1e-4)


def test_the_image_encoders_batchnorm_trains_during_finetuning(tmp_path):
    """Fine-tuning updates BN running statistics of the (ResNet) image encoder: train mode, unlike
    the prompt stage, whose frozen features use them read-only."""
    cfg = tiny_cfg("tiny-rn")
    data = tiny_data()
    ctx, model = setup(cfg, data)
    bns = [m for m in model.image.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    modes = {}
    for i, bn in enumerate(bns):
        bn.register_forward_pre_hook(lambda m, a, i=i: modes.setdefault(phase_now[0], set()).add(m.training))
    phase_now = ["?"]
    seen = []

    def tracked(phases):
        for phase in spy(phases, seen):
            phase_now[0] = phase.name
            yield phase

    stats = {}
    plan = METHOD.plan(cfg, model, data, ctx)

    def on_epoch_end(phase, epoch, *a, **k):
        stats[(phase, epoch)] = [bn.running_mean.clone() for bn in bns]

    Trainer(tmp_path, CPU, plan.state, ctx.generator, amp=False, on_epoch_end=on_epoch_end).fit(tracked(plan.phases))
    assert modes["prompt"] == {False} and modes["finetune"] == {True}
    last_prompt = stats[("prompt", cfg.prompt.epochs)]
    last = stats[("finetune", cfg.finetune.epochs)]
    assert all(torch.equal(a, b) for a, b in zip(stats[("prompt", 1)], last_prompt))
    assert all(not torch.equal(a, b) for a, b in zip(last_prompt, last))


def test_the_attnpool_resize_mode_is_a_config_key_in_the_runs_hash():
    """It changes the weights a run trains (RN50 at last stride 1 resizes the grid), so it is part of
    the run's identity; the default is the official code's bilinear; the zero-shot and CNN-baseline
    configs do not carry it (their run names stay as they were)."""
    from clipfh_utils.methods.base import ExperimentCfg
    from clipfh_utils.methods.cnn_baseline.config import CnnBaselineCfg
    from clipfh_utils.methods.promptsg.config import PromptSGCfg
    from clipfh_utils.runs import run_name
    base = {"name": "t", "backbone": {"name": "tiny-rn", "last_stride": 1}, "image_size": [64, 64]}
    default = build(ClipReidCfg, base, "test")
    bicubic = build(ClipReidCfg, {**base, "backbone": {**base["backbone"], "attnpool_resize": "bicubic"}}, "test")
    assert default.backbone.attnpool_resize == "bilinear"
    assert build(PromptSGCfg, base, "test").backbone.attnpool_resize == "bilinear"
    assert identity_dict(bicubic)["backbone"]["attnpool_resize"] == "bicubic"
    assert run_name("t", identity_dict(default)) != run_name("t", identity_dict(bicubic))
    for cls in (ExperimentCfg, CnnBaselineCfg):
        assert "attnpool_resize" not in identity_dict(cls())["backbone"]
    pos = {c.backbone.attnpool_resize: METHOD.load_backbone(c, CPU).model.visual.attnpool.positional_embedding
           for c in (default, bicubic)}
    for mode, p in pos.items():  # the key reaches the loaded model
        assert torch.equal(p, load_clip("tiny-rn", image_size=(64, 64), last_stride=1,
                                        attnpool_resize=mode).model.visual.attnpool.positional_embedding)
    assert not torch.equal(pos["bilinear"], pos["bicubic"])
    with pytest.raises(ConfigError, match="attnpool_resize: must be one of"):
        build(ClipReidCfg, {**base, "backbone": {"name": "tiny-rn", "attnpool_resize": "nearest"}}, "test")
