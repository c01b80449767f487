"""CLIP-ReID on the shared loop (CPU, tiny models): the recipe's losses and weights against
hand-computed values, parameter groups, gradient flow, frozen features in 2a, logged learning
rates, NaN stop, bit-identical resume, reloading a finished seed."""
import pytest
import torch

from clipfh_utils.backbones import load_clip
from clipfh_utils.backbones.features import normalize
from clipfh_utils.config import build
from clipfh_utils.methods import BuildContext
from clipfh_utils.methods.clip_reid import METHOD
from clipfh_utils.methods.clip_reid import model as reid_model
from clipfh_utils.methods.clip_reid.config import ClipReidCfg
from clipfh_utils.methods.clip_reid.model import ReIDOutput, reid_terms
from clipfh_utils.methods.clip_reid.prompts import encode_all_identities
from clipfh_utils.methods.clip_reid.train import finetune_phase, param_groups, prompt_phase
from clipfh_utils.pipeline.experiments import train_or_load
from clipfh_utils.training import loop as loop_module
from clipfh_utils.training.data import TrainData
from clipfh_utils.training.loop import NonFiniteLossError, Trainer, load_log, optimizer_step
from clipfh_utils.training.sampler import PKSampler
from clipfh_utils.training.schedules import warmup_multistep

from .test_training_parts import smoothed_ce_by_hand, supcon_by_hand, triplet_by_hand

CPU = torch.device("cpu")


def tiny_cfg(backbone="tiny-vit", **finetune) -> ClipReidCfg:
    ft = {"epochs": 2, "p": 2, "k": 2, "lr": 1e-3, "milestones": [2], "warmup_epochs": 1,
          "augment": {"pad": 2}, "loss_weights": {"id": 1.0, "triplet": 1.0, "i2t": 1.0}, **finetune}
    return build(ClipReidCfg, {"name": "t", "backbone": {"name": backbone}, "image_size": [64, 64], "amp": False,
                               "prompt": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "warmup_epochs": 1},
                               "finetune": ft}, "test")


def tiny_data(n_ids=4, per_id=4, seed=0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_ids * per_id, 3, 64, 64), dtype=torch.uint8, generator=g)
    labels = torch.arange(n_ids).repeat_interleave(per_id)
    return TrainData(images, labels, [f"{i:07d}" for i in range(n_ids)], images[::per_id].clone(),
                     torch.arange(n_ids))


def setup(cfg, data, seed=0):
    clip = load_clip(cfg.backbone.name, image_size=cfg.image_size, last_stride=cfg.backbone.last_stride)
    ctx = BuildContext(clip, CPU, seed, torch.Generator().manual_seed(seed), False)
    torch.manual_seed(seed)
    return ctx, METHOD.build(cfg, ctx, data.n_classes)


def train_seed(cfg, data, out, seed=0, resume=False, on_epoch_end=None, checkpoint_every=1, config=None):
    ctx, model = setup(cfg, data, seed)
    plan = METHOD.plan(cfg, model, data, ctx)
    Trainer(out, CPU, plan.state, ctx.generator, seed=seed, amp=False, resume=resume,
            on_epoch_end=on_epoch_end, checkpoint_every=checkpoint_every, config=config).fit(plan.phases)
    return model


# --------------------------------------------------------------------------- the recipe's losses

def test_reid_terms_hand_computed():
    """ID on both classifiers (label smoothing), triplet on ALL THREE pre-BN features, i2t."""
    torch.manual_seed(0)
    y = torch.tensor([0, 0, 1, 1])
    feats = (torch.randn(4, 3), torch.randn(4, 5), torch.randn(4, 2))
    logits = (torch.randn(4, 3), torch.randn(4, 3))
    text = torch.randn(3, 2)
    cfg = tiny_cfg()
    terms = reid_terms(ReIDOutput(feats, logits), y, text, cfg, None)

    assert terms["triplet"].item() == pytest.approx(sum(triplet_by_hand(f, y) for f in feats), abs=1e-4)
    assert terms["id"].item() == pytest.approx(sum(smoothed_ce_by_hand(lg, y, 0.1) for lg in logits), abs=1e-5)
    assert terms["i2t"].item() == pytest.approx(smoothed_ce_by_hand(feats[2] @ text.T, y, 0.1), abs=1e-5)


def test_finetune_total_is_the_reference_weighted_sum():
    """With the ViT-B/16 recipe's weights: total = 0.25 ID + 1 triplet + 1 i2t (numbers from the paper's code)."""
    cfg = tiny_cfg(loss_weights={"id": 0.25, "triplet": 1.0, "i2t": 1.0})
    data = tiny_data()
    ctx, model = setup(cfg, data)
    phase = finetune_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    model.image.train()
    total, terms = phase.objective(*phase.inputs(torch.arange(8)))
    assert set(terms) == {"id", "triplet", "i2t"}
    expected = 0.25 * terms["id"] + 1.0 * terms["triplet"] + 1.0 * terms["i2t"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["id"].item() != pytest.approx(terms["triplet"].item(), rel=1e-2)  # a swap would show


def test_prompt_loss_is_symmetric_supcon_of_the_identity_prompts():
    cfg = tiny_cfg()
    data = tiny_data()
    ctx, model = setup(cfg, data)
    phase = prompt_phase(cfg, model, data, ctx)
    torch.manual_seed(1)
    imf, y = torch.randn(6, 64), torch.tensor([0, 1, 2, 0, 1, 3])
    total, terms = phase.objective(imf, y)
    with torch.no_grad():
        txt = model.text(*model.prompts(y)).float()
    expected = supcon_by_hand(imf, txt, y, y) + supcon_by_hand(txt, imf, y, y)
    assert total.item() == pytest.approx(expected, abs=1e-4) and terms["supcon"] is total


def test_prompt_phase_features_are_frozen_eval_mode_features(tmp_path):
    """2a embeds the training set once with the image encoder in eval mode: BatchNorm statistics
    are used, never updated, and the features equal the zero-shot `encode_image`."""
    cfg = tiny_cfg("tiny-rn", epochs=0)
    data = tiny_data()
    ctx, model = setup(cfg, data)
    visual_before = {k: v.clone() for k, v in model.image.backbone.state_dict().items()}
    text_before = {k: v.clone() for k, v in model.text.state_dict().items()}
    ctx0 = model.prompts.ctx.detach().clone()
    phase = prompt_phase(cfg, model, data, ctx)
    model.image.train()  # whatever mode it was left in
    phase.start()
    feats = phase.inputs(torch.arange(len(data.labels)))[0]
    with torch.no_grad():
        ref = ctx.clip.model.eval().visual(normalize(data.images, ctx.clip.mean, ctx.clip.std))
    assert torch.allclose(feats, ref, atol=1e-5)
    plan = METHOD.plan(cfg, model, data, ctx)
    Trainer(tmp_path, CPU, plan.state, ctx.generator, amp=False).fit(plan.phases)
    after = model.image.backbone.state_dict()
    assert all(torch.equal(visual_before[k], after[k]) for k in visual_before)  # incl. BN running stats
    assert all(torch.equal(text_before[k], v) for k, v in model.text.state_dict().items())
    assert not torch.equal(ctx0, model.prompts.ctx)
    steps = load_log(tmp_path)
    assert set(steps["phase"]) == {"prompt"} and len(steps) == 2 * 2  # 16 images / batch 8, 2 epochs


def test_identity_text_features_are_not_constant():
    cfg = tiny_cfg()
    data = tiny_data(n_ids=5)
    _, model = setup(cfg, data)
    feats = encode_all_identities(model.prompts, model.text, 5)
    assert feats.shape == (5, 64)
    assert (torch.cdist(feats, feats) + torch.eye(5)).min() > 1e-4


# --------------------------------------------------------------------------- optimisation

def test_param_groups_follow_the_reference_optimizer():
    cfg = tiny_cfg(lr=1e-3, head_lr=5e-3, bias_lr_factor=2.0, weight_decay=1e-4, weight_decay_bias=5e-4)
    data = tiny_data()
    ctx, model = setup(cfg, data)
    finetune_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))  # sets requires_grad
    groups = {g["name"]: g for g in param_groups(cfg, model)}
    assert set(groups) == {"image_encoder", "image_encoder_bias", "heads"}
    assert groups["image_encoder_bias"]["base_lr"] == pytest.approx(2e-3)
    assert (groups["image_encoder"]["weight_decay"], groups["image_encoder_bias"]["weight_decay"]) == (1e-4, 5e-4)
    assert groups["heads"]["base_lr"] == pytest.approx(5e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [names[id(p)] for g in groups.values() for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert all("bias" in n for n in (names[id(p)] for p in groups["image_encoder_bias"]["params"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(grouped)
    assert "image.head.bn.bias" not in trainable and "image.head.classifier.weight" in trainable


@pytest.mark.parametrize("variant", ["linear", "arcface+center+text"])
@pytest.mark.parametrize("backbone", ["tiny-vit", "tiny-rn"])
def test_every_trainable_module_gets_a_gradient(variant, backbone):
    extra = {} if variant == "linear" else {"classifier": "arcface", "train_text_encoder": True,
                                            "loss_weights": {"id": 1, "triplet": 1, "i2t": 1, "center": 0.01}}
    cfg = tiny_cfg(backbone, **extra)
    data = tiny_data()
    ctx, model = setup(cfg, data)
    for n, p in model.image.backbone.named_parameters():
        if n.endswith("bn3.weight"):
            # open_clip zero-initialises the last BN of each random ResNet block, which blocks the
            # branch's gradient in step one; pretrained weights are never zero there
            torch.nn.init.ones_(p)
    phase = finetune_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    model.image.train()
    optimizer_step(phase.objective, phase.optimizer, phase.inputs(torch.arange(8)), phase.terms, CPU, False)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in phase.optimizer.param_groups:
        for p in group["params"]:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{group['name']}: {names.get(id(p))}"
    in_opt = {id(p) for g in phase.optimizer.param_groups for p in g["params"]}
    heads = [model.image.head.classifier, model.image.head_proj.classifier, model.image.head.bn]
    assert all(id(p) in in_opt for m in heads for p in m.parameters() if p.requires_grad)
    if model.center is not None:
        assert id(model.center.centers) in in_opt and "center" in phase.terms
    if cfg.finetune.train_text_encoder:
        assert all(id(p) in in_opt for p in model.text.parameters())
    assert not model.prompts.ctx.requires_grad


def test_logged_learning_rates_follow_each_groups_config(tmp_path):
    cfg = tiny_cfg(epochs=3, lr=1e-3, head_lr=5e-3, milestones=[2], warmup_epochs=2, warmup_factor=0.1,
                   loss_weights={"id": 1, "triplet": 1, "i2t": 1, "center": 0.01}, center_lr=0.5)
    model = train_seed(cfg, tiny_data(), tmp_path)
    log = load_log(tmp_path)
    ft = log[log.phase == "finetune"].groupby("epoch").first()
    assert list(ft.index) == [1, 2, 3]  # epochs are numbered as the reference steps them
    for e in (1, 2, 3):
        f = warmup_multistep(e, [2], 0.1, 2, 0.1)
        assert ft.loc[e, "lr_image_encoder"] == pytest.approx(1e-3 * f)
        assert ft.loc[e, "lr_image_encoder_bias"] == pytest.approx(2e-3 * f)
        assert ft.loc[e, "lr_heads"] == pytest.approx(5e-3 * f)
        assert ft.loc[e, "lr_center"] == pytest.approx(0.5 * f)
    assert ft.loc[1, "lr_image_encoder"] == pytest.approx(1e-3 * 0.55)  # first epoch above the warm-up start
    epochs = load_log(tmp_path, per="epoch")
    assert len(epochs) == cfg.prompt.epochs + 3
    e2 = epochs[(epochs.phase == "finetune") & (epochs.epoch == 2)].iloc[0]
    assert e2["total"] == pytest.approx(log[(log.phase == "finetune") & (log.epoch == 2)]["total"].mean())
    pr = log[log.phase == "prompt"].groupby("epoch")["lr_prompts"].first()
    # 1 warm-up epoch of 2: epoch 1 is already on the cosine, half-way (timm's t_initial = all epochs)
    assert pr[1] == pytest.approx(1e-6 + 0.5 * (1e-2 - 1e-6)) and pr[2] == pytest.approx(1e-6)
    assert model.image.head.bn.running_mean.abs().sum() > 0  # BNNeck statistics were learnt


def test_non_finite_loss_stops_with_phase_epoch_step_and_terms(tmp_path, monkeypatch):
    monkeypatch.setattr(reid_model, "triplet_loss", lambda f, y, m: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError) as e:
        train_seed(tiny_cfg(), tiny_data(), tmp_path)
    msg = str(e.value)
    assert "phase 'finetune' at epoch 1 step 0" in msg and "triplet=nan" in msg and "id=" in msg
    assert str(tmp_path / "checkpoint.pt") in msg
    assert f"--resume-from {tmp_path.parent.name}" in msg  # the run (the seed folder's parent), to continue
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["phase"] == "prompt" and ckpt["epoch"] == 2  # the last good checkpoint survives


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_at, every", [(("prompt", 1), 1), (("finetune", 1), 1), (("finetune", 2), 2)])
def test_resume_reaches_the_same_weights(tmp_path, stop_at, every):
    cfg = tiny_cfg(epochs=3, milestones=[2])
    ref = train_seed(cfg, tiny_data(), tmp_path / "a")
    saved = []

    def interrupt(phase, epoch):
        saved.append((phase, epoch))
        if (phase, epoch) == stop_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_seed(cfg, tiny_data(), tmp_path / "b", on_epoch_end=interrupt, checkpoint_every=every)
    if every == 2:  # checkpoints at even epochs and at the end of each phase only
        assert saved == [("prompt", 2), ("finetune", 2)]
    res = train_seed(cfg, tiny_data(), tmp_path / "b", resume=True, checkpoint_every=every)
    a, b = ref.state_dict(), res.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    la, lb = load_log(tmp_path / "a"), load_log(tmp_path / "b")
    assert len(la) == len(lb)  # the resumed log holds no duplicated epochs
    assert la["total"].equals(lb["total"])
    assert not (tmp_path / "b" / "checkpoint.pt").exists() and (tmp_path / "b" / "weights.pt").exists()


def test_a_finished_seed_is_loaded_not_trained(tmp_path, monkeypatch):
    cfg, data = tiny_cfg(), tiny_data()
    calls = []
    real = loop_module.optimizer_step
    monkeypatch.setattr(loop_module, "optimizer_step", lambda *a, **k: (calls.append(1), real(*a, **k))[1])

    def once():
        ctx, _ = setup(cfg, data)
        return train_or_load(METHOD, cfg, ctx, lambda: data, data.n_classes, tmp_path, resume=False,
                             progress=False, label="t")

    first, trained = once()
    n = len(calls)
    assert trained and n > 0
    again, trained = once()
    assert not trained and len(calls) == n  # no training step the second time
    a, b = first.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not again.training


def test_resume_refuses_another_seeds_checkpoint(tmp_path):
    def stop(phase, epoch):
        raise Interrupt

    with pytest.raises(Interrupt):
        train_seed(tiny_cfg(), tiny_data(), tmp_path, on_epoch_end=stop)
    from clipfh_utils.pipeline.runner import bad_input_errors
    from clipfh_utils.training.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: checkpoint is for seed 0, not 1 .*delete it") as e:
        train_seed(tiny_cfg(), tiny_data(), tmp_path, seed=1, resume=True)
    assert isinstance(e.value, bad_input_errors())  # "fix the input": exit code 2, one line


def test_the_compiled_loss_serves_every_seed_without_recompiling():
    """Compilation is paid once per process and shape: seed 2 reuses seed 1's graphs."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    for seed in (0, 1, 2):
        cfg, data = tiny_cfg(), tiny_data()
        ctx, model = setup(cfg, data, seed)
        phase = finetune_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2, seed))
        model.image.train()
        fn = torch.compile(phase.loss, backend="eager")  # a new wrapper per seed, as the loop makes
        inputs = phase.inputs(torch.arange(8))  # one augmented batch for both: augmentation is random
        total, _ = fn(*phase.loss_args, *inputs)
        ref, _ = phase.objective(*inputs)
        assert torch.isfinite(total) and total.item() == pytest.approx(ref.item(), rel=1e-4)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0 and graphs[1] == graphs[0] == graphs[2], graphs


def test_the_eta_after_a_resume_counts_the_epochs_before_it(tmp_path, monkeypatch):
    """Every epoch takes 5 s (a fake clock): after resuming at fine-tuning epoch 2 of 4, the phase
    ETA at epoch 3 is 1 epoch x 5 s, not the restored seconds over this session's epochs (15 s)."""
    import itertools
    import types
    clock = itertools.count(0, 5)  # two readings per epoch, start and end: 5 s each
    monkeypatch.setattr(loop_module, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    monkeypatch.setenv("CLIPFH_RUN_LOG", str(tmp_path / "run.log"))
    cfg = tiny_cfg(epochs=4, milestones=[3])

    def interrupt(phase, epoch):
        if (phase, epoch) == ("finetune", 2):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_seed(cfg, tiny_data(), tmp_path / "s", on_epoch_end=interrupt)
    train_seed(cfg, tiny_data(), tmp_path / "s", resume=True)
    lines = [ln for ln in (tmp_path / "run.log").read_text().splitlines() if " finetune epoch " in ln]
    after = [ln for ln in lines if "finetune epoch 3/4" in ln][-1]
    assert "5.0 s" in after and "phase ETA 5s" in after, after
