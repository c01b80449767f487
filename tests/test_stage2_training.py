"""Stage 2 loops: gradient flow, schedules as logged, NaN stop, resume equality (CPU)."""
import pytest
import torch

from clipfh_utils import losses
from clipfh_utils.augment import DeviceAugment
from clipfh_utils.config import Stage2Cfg, build
from clipfh_utils.models import load_clip
from clipfh_utils.prompts import PromptLearner, TextEncoder
from clipfh_utils.reid_model import ReIDModel
from clipfh_utils.train_stage2 import (NonFiniteLossError, TrainData, TrainLog, load_log,
                                       make_loss_fn, make_optimizer, param_groups, train_prompts,
                                       train_stage2, train_step)
from clipfh_utils.schedules import warmup_multistep
from clipfh_utils.losses import CenterLoss

CPU = torch.device("cpu")


def tiny_cfg(**finetune) -> Stage2Cfg:
    ft = {"epochs": 2, "p": 2, "k": 2, "lr": 1e-3, "milestones": [1], "warmup_epochs": 1,
          "augment": {"pad": 2}, **finetune}
    return build(Stage2Cfg, {"name": "t", "image_size": [64, 64], "amp": False,
                             "prompt": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "warmup_epochs": 1},
                             "finetune": ft}, "test")


def tiny_data(n_ids=4, per_id=4, seed=0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_ids * per_id, 3, 64, 64), dtype=torch.uint8, generator=g)
    labels = torch.arange(n_ids).repeat_interleave(per_id)
    return TrainData(images, labels, [f"{i:07d}" for i in range(n_ids)], images[::per_id].clone(),
                     torch.arange(n_ids))


def fresh_clip(name="tiny-vit"):
    torch.manual_seed(123)
    return load_clip(name)


def test_prompt_stage_updates_only_the_prompts(tmp_path):
    clip = fresh_clip()
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    for p in clip.model.parameters():
        p.requires_grad_(False)
    pl = PromptLearner(clip, 4)
    ctx0 = pl.ctx.detach().clone()
    data = tiny_data()  # 16 images, batch 8: the last batch is full, never empty
    train_prompts(clip, pl, TextEncoder(clip.model), data, tiny_cfg().prompt, CPU, False,
                  torch.Generator().manual_seed(0), TrainLog(tmp_path, None),
                  lambda *a: None)
    after = clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(ctx0, pl.ctx)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("nan" not in x.lower() for x in lines)


@pytest.mark.parametrize("variant", ["linear", "arcface+center+text"])
@pytest.mark.parametrize("backbone", ["tiny-vit", "tiny-rn"])
def test_every_trainable_module_gets_a_gradient(variant, backbone):
    extra = {} if variant == "linear" else {"classifier": "arcface", "train_text_encoder": True,
                                            "loss_weights": {"center": 0.01}}
    cfg = tiny_cfg(**extra).finetune
    clip = fresh_clip(backbone)
    for p in clip.model.parameters():
        p.requires_grad_(False)
    model = ReIDModel(clip, 4, cfg.classifier)
    for n, p in model.visual.named_parameters():
        p.requires_grad_(True)
        if n.endswith("bn3.weight"):
            # open_clip zero-initialises the last BN of each random ResNet block, which blocks the
            # branch's gradient in step one; pretrained weights are never zero there
            torch.nn.init.ones_(p)
    center = CenterLoss(4, model.dims[1]) if cfg.loss_weights.center > 0 else None
    text = None
    prompts = PromptLearner(clip, 4)
    prompts.ctx.requires_grad_(False)
    if cfg.train_text_encoder:
        text = TextEncoder(clip.model)
        for p in text.parameters():
            p.requires_grad_(True)
        tf = text(*prompts(torch.arange(4))).float()
    else:
        tf = torch.randn(4, 64)
    opt = make_optimizer(param_groups(model, cfg, center, text), cfg, CPU)
    names = {id(p): n for n, p in [*model.named_parameters(), *(text.named_parameters() if text else []),
                                    *(center.named_parameters() if center else [])]}
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len({id(p) for g in opt.param_groups for p in g["params"]})
    data = tiny_data()
    aug = DeviceAugment(cfg.augment, clip.mean, clip.std, torch.Generator().manual_seed(0))
    model.train()
    train_step(make_loss_fn(model, cfg, center), opt, aug, data.images[:8], data.labels[:8], tf, CPU, False)
    for group in opt.param_groups:
        for p in group["params"]:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{group['name']}: {names.get(id(p))}"
    # the heads and optional modules really are in the optimiser
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for m in (model.classifier, model.classifier_proj, model.bn, model.bn_proj):
        assert all(id(p) in in_opt for p in m.parameters() if p.requires_grad)
    if center is not None:
        assert id(center.centers) in in_opt
    if text is not None:
        assert all(id(p) in in_opt for p in text.parameters())


def test_logged_learning_rates_follow_each_groups_config(tmp_path):
    cfg = tiny_cfg(epochs=3, lr=1e-3, head_lr=5e-3, milestones=[2], warmup_epochs=2,
                   warmup_factor=0.1, loss_weights={"center": 0.01}, center_lr=0.5)
    res = train_stage2(cfg, fresh_clip(), tiny_data(), tmp_path, CPU, seed=0)
    log = load_log(tmp_path)
    ft = log[log.phase == "finetune"].groupby("epoch").first()
    for e in range(3):
        f = warmup_multistep(e, [2], 0.1, 2, 0.1)
        assert ft.loc[e, "lr_image_encoder"] == pytest.approx(1e-3 * f)
        assert ft.loc[e, "lr_heads"] == pytest.approx(5e-3 * f)
        assert ft.loc[e, "lr_center"] == pytest.approx(0.5 * f)
    epochs = load_log(tmp_path, per="epoch")
    assert len(epochs) == cfg.prompt.epochs + 3
    e2 = epochs[(epochs.phase == "finetune") & (epochs.epoch == 2)].iloc[0]
    assert e2["total"] == pytest.approx(log[(log.phase == "finetune") & (log.epoch == 2)]["total"].mean())
    pr = log[log.phase == "prompt"].groupby("epoch")["lr"].first()
    assert pr[0] == pytest.approx(cfg.prompt.warmup_lr)
    assert res.model.training is False


def test_non_finite_loss_stops_with_epoch_step_and_terms(tmp_path, monkeypatch):
    monkeypatch.setattr(losses, "triplet_loss", lambda f, y, m: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError) as e:
        train_stage2(tiny_cfg(), fresh_clip(), tiny_data(), tmp_path, CPU, seed=0)
    msg = str(e.value)
    assert "epoch 0 step 0" in msg and "triplet=nan" in msg and "id=" in msg
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["phase"] == "prompt"  # the last good checkpoint survives


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_at", [("prompt", 0), ("finetune", 0)])
def test_resume_reaches_the_same_weights(tmp_path, stop_at):
    cfg = tiny_cfg(epochs=3, milestones=[2])
    ref = train_stage2(cfg, fresh_clip(), tiny_data(), tmp_path / "a", CPU, seed=0)

    def interrupt(phase, epoch):
        if (phase, epoch) == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_stage2(cfg, fresh_clip(), tiny_data(), tmp_path / "b", CPU, seed=0, on_epoch_end=interrupt)
    res = train_stage2(cfg, fresh_clip(), tiny_data(), tmp_path / "b", CPU, seed=0, resume=True)
    a, b = ref.model.state_dict(), res.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert torch.equal(ref.prompts.ctx, res.prompts.ctx)
    la, lb = load_log(tmp_path / "a"), load_log(tmp_path / "b")
    assert len(la) == len(lb)  # resumed log holds no duplicated epochs
    assert la["total"].equals(lb["total"])


def test_resume_without_checkpoint_starts_fresh_and_finished_run_reloads(tmp_path):
    a = train_stage2(tiny_cfg(), fresh_clip(), tiny_data(), tmp_path / "a", CPU, seed=0, resume=True)
    b = train_stage2(tiny_cfg(), fresh_clip(), tiny_data(), tmp_path / "b", CPU, seed=0)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    steps = len(load_log(tmp_path / "a"))
    again = train_stage2(tiny_cfg(), fresh_clip(), tiny_data(), tmp_path / "a", CPU, seed=0, resume=True)
    assert len(load_log(tmp_path / "a")) == steps  # nothing retrained
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    with pytest.raises(ValueError, match="seed 0, not 1"):
        train_stage2(tiny_cfg(), fresh_clip(), tiny_data(), tmp_path / "a", CPU, seed=1, resume=True)
