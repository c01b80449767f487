"""PromptSG's recipe as the paper states it (reference notes, section 5), tested through the model:
each test is written from the recipe and fails when that part of it is wrong (docs/methods.md
lists the breakage each one catches; each was seen failing with the bug planted)."""
import pytest
import torch
import torch.nn.functional as F

from clipfh_utils.backbones.features import normalize
from clipfh_utils.methods.promptsg import METHOD
from clipfh_utils.methods.promptsg.config import InteractionCfg
from clipfh_utils.methods.promptsg.model import Interaction, PromptSGOutput, promptsg_terms
from clipfh_utils.methods.promptsg.train import train_phase
from clipfh_utils.training.sampler import PKSampler

from .test_clip_reid import tiny_data
from .test_promptsg import BACKBONES, cosine_supcon_by_hand, images, random_output, setup, tiny_cfg
from .test_training_parts import smoothed_ce_by_hand, triplet_by_hand


# --------------------------------------------------------------------------- the re-weighting

class SharpMap(torch.nn.Module):
    """Stands in for the cross-attention: a fixed map with 90 % of its mass on patch 0."""

    def __init__(self, attended):
        super().__init__()
        self.attended = attended

    def forward(self, q, k, v, **kwargs):
        n = k.shape[1]
        w = torch.full((len(q), 1, n), 0.1 / (n - 1))
        w[..., 0] = 0.9
        return self.attended, w


def output_with_sharp_map(blocks, norm, reweight, seed=0):
    torch.manual_seed(seed)
    mod = Interaction(InteractionCfg(blocks=blocks, heads=2, norm=norm), 16).eval()
    g = torch.Generator().manual_seed(1)
    q, tokens = torch.randn(3, 16, generator=g), torch.randn(3, 10, 16, generator=g)
    mod.cross = SharpMap(torch.randn(3, 1, 16, generator=g))
    mod.cfg = InteractionCfg(blocks=blocks, heads=2, norm=norm, reweight=reweight)
    with torch.no_grad():
        return mod(q, tokens)[0]


def relative_change(a, b):
    return ((a - b).norm(dim=1) / b.norm(dim=1)).min().item()


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_default_reweighting_reaches_the_output_token(blocks):
    """The recipe: the map re-weights what the blocks see. With a map holding 90 % of its mass on
    one patch, the default recipe's output differs from the same weights without re-weighting by
    more than 20 % (relative L2); pre-norm blocks divide the per-token scale out (the ablation)."""
    default = InteractionCfg()
    assert (default.norm, default.reweight) == ("post", "scale")
    post = relative_change(output_with_sharp_map(blocks, "post", "scale"), output_with_sharp_map(blocks, "post", "none"))
    pre = relative_change(output_with_sharp_map(blocks, "pre", "scale"), output_with_sharp_map(blocks, "pre", "none"))
    assert post > 0.2, post
    assert pre < post


def test_with_no_blocks_the_reweighted_patches_are_unused():
    for norm in ("pre", "post"):
        assert torch.equal(output_with_sharp_map(0, norm, "scale"), output_with_sharp_map(0, norm, "none"))


# --------------------------------------------------------------------------- SupCon and the triplet

def test_default_supcon_is_scale_free_and_at_the_backbones_own_temperature():
    """The paper's similarity is cosine: scaling the image features by 3 leaves the default term
    unchanged (a raw dot product would not), at CLIP's own trained temperature 1/exp(logit_scale)."""
    y = torch.tensor([0, 0, 1, 1, 2])
    out = random_output()
    cfg = tiny_cfg()
    ctx, model = setup(cfg)
    t = 1 / ctx.clip.model.logit_scale.exp().item()
    assert model.supcon_temperature == pytest.approx(t) and t != 1.0
    base = promptsg_terms(out, y, cfg, model.supcon_temperature)["supcon"]
    scaled = PromptSGOutput(out.feature, out.logits, 3 * out.image, out.prompt, None, out.hidden)
    assert promptsg_terms(out, y, cfg, t)["supcon"].item() == pytest.approx(
        cosine_supcon_by_hand(out.image, out.prompt, y, t), abs=1e-4)
    assert promptsg_terms(scaled, y, cfg, t)["supcon"].item() == pytest.approx(base.item(), abs=1e-5)
    raw = tiny_cfg(optim={"supcon_normalize": False, "supcon_temperature": 1.0})
    assert abs(promptsg_terms(scaled, y, raw)["supcon"] - promptsg_terms(out, y, raw)["supcon"]) > 1e-2


@pytest.mark.parametrize("names, expected", [
    (["feature"], ["feature"]), (["feature", "mid", "final", "proj"], ["feature", "mid", "final", "proj"]),
    (["mid", "proj"], ["mid", "proj"])])
def test_triplet_is_summed_over_the_configured_features(names, expected):
    y = torch.tensor([0, 0, 1, 1, 2])
    out = random_output(seed=3)
    feats = {"feature": out.feature, "mid": out.hidden[0], "final": out.hidden[1], "proj": out.hidden[2]}
    cfg = tiny_cfg(optim={"triplet_features": names})
    got = promptsg_terms(out, y, cfg, 0.07)["triplet"].item()
    assert got == pytest.approx(sum(triplet_by_hand(feats[n], y) for n in expected), abs=1e-5)
    # without an interaction module the identity feature IS the projected one: counted once
    same = PromptSGOutput(out.hidden[2], out.logits, out.image, out.prompt, None, out.hidden)
    once = promptsg_terms(same, y, tiny_cfg(), 0.07)["triplet"].item()
    assert once == pytest.approx(sum(triplet_by_hand(f, y) for f in out.hidden), abs=1e-5)


# --------------------------------------------------------------------------- the recipe, through the model
# Written from the paper's recipe (reference notes, section 5), each to fail when that part is wrong.

@pytest.mark.parametrize("backbone", BACKBONES)
def test_id_and_triplet_see_the_interaction_output_before_bnneck(backbone):
    cfg = tiny_cfg(backbone)
    ctx, model = setup(cfg)
    with torch.no_grad():  # a BNNeck that visibly changes its input
        model.head.bn.weight.uniform_(0.5, 2.0)
        model.head.bn.bias.normal_()
    model.train()
    x, y = images(8, seed=4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with torch.no_grad():
        out = model(x, y)
        terms = promptsg_terms(out, y, cfg, model.supcon_temperature)
        f = model.backbone(x)  # recomputed part by part (batch statistics: the same again)
        prompt = model.compose(model.inversion(f.proj))
        feature = model.interaction(prompt, model.backbone.project_tokens(f.tokens))[0]
        bnd = F.batch_norm(feature, None, None, model.head.bn.weight, model.head.bn.bias, training=True)
        logits = model.head.classifier(bnd)
    assert torch.allclose(out.feature, feature, atol=1e-5)
    assert not torch.allclose(bnd, feature, atol=1e-2)
    assert torch.allclose(out.logits, logits, atol=1e-5)
    assert terms["id"].item() == pytest.approx(smoothed_ce_by_hand(logits, y, 0.1), abs=1e-4)
    triplet = sum(triplet_by_hand(v, y) for v in (feature, f.mid, f.final, f.proj))
    assert terms["triplet"].item() == pytest.approx(triplet, abs=1e-4)


def test_a_template_ensemble_changes_inference_only(tmp_path, monkeypatch):
    """Training sees the config's template alone: the same prompts and the same loss as without the
    ensemble; only the evaluated features change."""
    from clipfh_utils.methods.promptsg import templates
    path = tmp_path / "t.yaml"
    path.write_text("mine:\n  - 'A close-up of the back of a X hand.'\n  - 'A X hand, palm down.'\n")
    monkeypatch.setattr(templates, "TEMPLATES_FILE", path)
    data = tiny_data()
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    x, y = normalize(data.images[:8], OPENAI_DATASET_MEAN, OPENAI_DATASET_STD), data.labels[:8]
    results = {}
    for name, extra in (("plain", {}), ("ensemble", {"prompt": {"ensemble": "mine"}})):
        for inversion in (True, False):
            sections = dict(extra)
            if not inversion:
                sections.update(inversion={"enabled": False}, optim={"loss_weights": {"id": 1, "triplet": 1, "supcon": 0}})
            cfg = tiny_cfg(**sections)
            ctx, model = setup(cfg)
            phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
            if phase.start:
                phase.start()
            model.train()
            with torch.no_grad():
                out = model(x, y) if inversion else model(x, y, model.fixed_prompt())
                total, _ = phase.loss(x, y)
                model.eval()
                emb = {mode: fn(x) for mode, fn in METHOD.embedders(cfg, model).items()}
            results[name, inversion] = (out.prompt, total, emb)
    for inversion in (True, False):
        (p0, t0, e0), (p1, t1, e1) = results["plain", inversion], results["ensemble", inversion]
        assert torch.allclose(p0, p1, atol=1e-6) and torch.allclose(t0, t1, atol=1e-6)
        assert not torch.allclose(e0["fixed"], e1["fixed"], atol=1e-4)
    assert not torch.allclose(results["plain", True][2]["composed"], results["ensemble", True][2]["composed"], atol=1e-4)


def encoder_grads(model, phase, x, y, cut_prompt_path=False):
    hook = model.inversion.register_forward_pre_hook(lambda m, a: (a[0].detach(),)) if cut_prompt_path else None
    model.zero_grad(set_to_none=True)
    total, _ = phase.loss(x, y)
    total.backward()
    if hook is not None:
        hook.remove()
    return torch.cat([p.grad.flatten() for p in model.backbone.parameters() if p.grad is not None])


@pytest.mark.parametrize("supcon", [0.5, 0.0])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_image_encoder_learns_through_the_prompt_path_too(backbone, supcon):
    """The pseudo-word comes from the image, so the encoder's gradient also flows back through the
    composed prompt (inversion network, frozen text tower, interaction query), with λ = 0 as well."""
    cfg = tiny_cfg(backbone, optim={"loss_weights": {"id": 1.0, "triplet": 1.0, "supcon": supcon}})
    data = tiny_data()
    ctx, model = setup(cfg)
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    model.train()
    x, y = normalize(data.images[:8], ctx.clip.mean, ctx.clip.std), data.labels[:8]
    full = encoder_grads(model, phase, x, y)
    cut = encoder_grads(model, phase, x, y, cut_prompt_path=True)
    assert full.shape == cut.shape and full.abs().sum() > 0
    assert (full - cut).norm() > 1e-3 * full.norm(), "no gradient reaches the encoder through the prompt"


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_attention_map_carries_gradient_into_the_reweighting(blocks):
    """With the attended value cut off, the query/key projections can learn only through the map's
    re-weighting of the patch tokens: they must get a gradient (and none without re-weighting)."""
    grads = {}
    for reweight in ("scale", "none"):
        torch.manual_seed(0)
        mod = Interaction(InteractionCfg(blocks=blocks, heads=2, reweight=reweight), 16)
        cross = mod.cross
        cross.register_forward_hook(lambda m, a, o: (o[0].detach(), o[1]))
        g = torch.Generator().manual_seed(1)
        q, tokens = torch.randn(3, 16, generator=g), torch.randn(3, 10, 16, generator=g)
        out, _ = mod(q, tokens)
        (out * torch.randn(out.shape, generator=g)).sum().backward()
        grad = cross.in_proj_weight.grad
        grads[reweight] = 0.0 if grad is None else grad[:32].abs().sum().item()  # the q and k rows
    assert grads["scale"] > 1e-4 and grads["none"] == 0
