"""PromptSG (Stage 3) on the shared loop, CPU, tiny models: each part does what it claims.

The study's own Stage 3 attended over one pooled vector (a constant softmax) and never put the
pseudo-token into the text; CLIP-HandID's inversion network got no gradient. Each of those
failures, and swapping the evaluated feature for the plain image feature, fails a test here.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from clipfh_utils.backbones import load_clip
from clipfh_utils.backbones.features import embed_images, normalize
from clipfh_utils.config import ConfigError, build
from clipfh_utils.methods import BuildContext
from clipfh_utils.methods.promptsg import METHOD
from clipfh_utils.methods.promptsg.config import InteractionCfg, PromptSGCfg
from clipfh_utils.methods.promptsg.model import Interaction, PromptSGOutput, promptsg_terms
from clipfh_utils.methods.promptsg.templates import fixed_sentence, load_template_set
from clipfh_utils.methods.promptsg.train import train_phase
from clipfh_utils.pipeline.experiments import train_or_load
from clipfh_utils.training.loop import load_log, optimizer_step
from clipfh_utils.training.sampler import PKSampler
from clipfh_utils.training.schedules import step_decay

from .test_clip_reid import tiny_data
from .test_training_parts import smoothed_ce_by_hand, supcon_by_hand, triplet_by_hand

CPU = torch.device("cpu")
BACKBONES = ["tiny-vit", "tiny-rn"]


def tiny_cfg(backbone="tiny-vit", **sections) -> PromptSGCfg:
    optim = {"epochs": 2, "p": 2, "k": 2, "lr": 1e-3, "new_lr": 1e-3, "step_size": 1,
             "augment": {"pad": 2}, **sections.pop("optim", {})}
    data = {"name": "t", "backbone": {"name": backbone, **({"last_stride": 1} if backbone == "tiny-rn" else {})},
            "image_size": [64, 64], "amp": False, "interaction": {"heads": 2}, "optim": optim, **sections}
    cfg = build(PromptSGCfg, data, "test")
    METHOD.validate(cfg, "test")
    return cfg


def setup(cfg, n_classes=4, seed=0):
    clip = load_clip(cfg.backbone.name, image_size=cfg.image_size, last_stride=cfg.backbone.last_stride)
    ctx = BuildContext(clip, CPU, seed, torch.Generator().manual_seed(seed), False)
    torch.manual_seed(seed)
    model = METHOD.build(cfg, ctx, n_classes)
    for n, p in model.backbone.named_parameters():
        if n.endswith("bn3.weight"):
            # open_clip zero-initialises the last BN of each random ResNet block, which blocks the
            # branch's gradient in step one; pretrained weights are never zero there
            torch.nn.init.ones_(p)
    return ctx, model


def images(n=4, seed=1):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def word_embedding(clip, word):
    ids = clip.tokenizer([word])[0]
    assert int((ids > 0).sum()) == 3, f"{word!r} is not one BPE token"
    return clip.model.token_embedding.weight[int(ids[1])].detach()


# --------------------------------------------------------------------------- the composed prompt

@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_composed_prompt_with_a_real_word_equals_encode_text(backbone, truncate):
    """The pseudo-token replaces X's embedding: with a real word's embedding as the pseudo-token,
    the prompt embedding is `encode_text` of the literal sentence (EOT, ln_final, projection)."""
    cfg = tiny_cfg(backbone, prompt={"truncate": truncate})
    ctx, model = setup(cfg)
    tok, clip_model = ctx.clip.tokenizer, ctx.clip.model
    words = ["person", "left", "old"]
    pseudo = torch.stack([word_embedding(ctx.clip, w) for w in words])
    with torch.no_grad():
        ours = model.compose(pseudo)
        ref = clip_model.encode_text(tok([f"A photo of a {w} hand." for w in words]))
        without = clip_model.encode_text(tok(["A photo of a X hand.", "A photo of a hand."]))
    assert ours.shape == (3, model.embed_dim)
    assert torch.allclose(ours, ref, atol=1e-5)
    for other in without:  # the placeholder's own embedding, or no word at all, is not the same
        assert not torch.allclose(ours[0], other, atol=1e-3)
    assert model.template.token_ids.shape[1] == (9 if truncate else 77)  # SOT a photo of a X hand . EOT


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_pseudo_token_is_in_the_prompt_and_comes_from_the_image(backbone):
    cfg = tiny_cfg(backbone)
    _, model = setup(cfg)
    model.train()  # the inversion network's BatchNorm on batch statistics, as in training
    x = images()
    with torch.no_grad():
        f = model.backbone(x)
        pseudo = model.inversion(f.proj)
        embeds, ids = model.template(pseudo[:, None])
        assert torch.equal(embeds[:, model.template.start], pseudo)  # spliced in at X's position
        prompts = model.compose(pseudo)
        fixed = model.fixed_prompt()
    assert pseudo.shape == (4, model.clip.model.token_embedding.weight.shape[1])
    # every image its own prompt, none of them the prompt without the pseudo-word
    assert (torch.cdist(prompts, prompts) + torch.eye(4) * 1e3).min() > 1e-4
    assert (prompts - fixed).norm(dim=1).min() > 1e-4
    # BatchNorm initialised at the token-embedding table's scale: the pseudo-word starts word-sized
    table = model.clip.model.token_embedding.weight
    assert torch.allclose(model.inversion.bn.weight, table.std(0))
    assert torch.allclose(model.inversion.bn.bias, table.mean(0))


def test_inversion_network_is_a_three_layer_mlp_with_batchnorm_last():
    cfg = tiny_cfg()
    _, model = setup(cfg)
    linears = [m for m in model.inversion.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 512), (512, 512), (512, 64)]
    assert isinstance(model.inversion.bn, torch.nn.BatchNorm1d) and model.inversion.bn.num_features == 64


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("backbone", BACKBONES)
def test_one_step_reaches_inversion_interaction_and_encoder_but_not_the_text_tower(backbone):
    cfg = tiny_cfg(backbone)
    data = tiny_data()
    ctx, model = setup(cfg)
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    model.train()
    text_before = {k: v.clone() for k, v in model.text.state_dict().items()}
    inv_before = [p.detach().clone() for p in model.inversion.parameters()]
    optimizer_step(phase.loss, phase.optimizer, phase.inputs(torch.arange(8)), phase.terms, CPU, False)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in phase.optimizer.param_groups}
    # the shared optimiser groups: weights and biases apart, each kind at its own rate
    assert set(groups) == {"image_encoder", "image_encoder_bias", "new_modules", "new_modules_bias"}
    for kind in ("image_encoder", "new_modules"):
        assert groups[kind]["base_lr"] == groups[kind + "_bias"]["base_lr"] == 1e-3
        assert all("bias" in names[id(p)] for p in groups[kind + "_bias"]["params"])
        assert not any("bias" in names[id(p)] for p in groups[kind]["params"])
    for g in groups.values():
        for p in g["params"]:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{g['name']}: {names[id(p)]}"
    in_opt = {id(p) for g in groups.values() for p in g["params"]}
    for module in (model.inversion, model.interaction, model.backbone):
        assert all(id(p) in in_opt for p in module.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.text.parameters())
    assert all(torch.equal(text_before[k], v) for k, v in model.text.state_dict().items())
    assert not any(torch.equal(a, b) for a, b in zip(inv_before, model.inversion.parameters()))
    assert groups["image_encoder"]["base_lr"] == 1e-3 and id(model.head.bn.bias) not in in_opt


def test_the_inversion_network_learns_through_the_text_tower_alone():
    """With only the SupCon term, the inversion network's gradient can only come through the
    composed prompt and the frozen text tower (CLIP-HandID's never did)."""
    cfg = tiny_cfg(optim={"loss_weights": {"id": 0.0, "triplet": 0.0, "supcon": 1.0}})
    data = tiny_data()
    ctx, model = setup(cfg)
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    model.train()
    optimizer_step(phase.loss, phase.optimizer, phase.inputs(torch.arange(8)), phase.terms, CPU, False)
    assert all(p.grad.abs().sum() > 0 for p in model.inversion.mlp.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.interaction.parameters())


def test_unfrozen_text_encoder_trains_at_its_own_lr():
    cfg = tiny_cfg(text={"train": True, "lr": 3e-4})
    data = tiny_data()
    ctx, model = setup(cfg)
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    model.train()
    optimizer_step(phase.loss, phase.optimizer, phase.inputs(torch.arange(8)), phase.terms, CPU, False)
    text_groups = [g for g in phase.optimizer.param_groups if g["name"].startswith("text_encoder")]
    assert {g["name"] for g in text_groups} == {"text_encoder", "text_encoder_bias"}
    assert all(g["base_lr"] == 3e-4 for g in text_groups)
    assert sum(len(g["params"]) for g in text_groups) == len(list(model.text.parameters()))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text.parameters())
    state = METHOD.model_state(cfg, model).state_dict()
    assert any(k.startswith("text.") for k in state)  # saved, since it is no longer the pretrained one
    frozen_state = METHOD.model_state(tiny_cfg(), setup(tiny_cfg())[1]).state_dict()
    assert not any(k.startswith(("text.", "template.", "ensemble.")) for k in frozen_state)


# --------------------------------------------------------------------------- the interaction

@pytest.mark.parametrize("blocks", [0, 1, 2])
def test_interaction_attends_over_every_patch(blocks):
    torch.manual_seed(0)
    mod = Interaction(InteractionCfg(blocks=blocks, heads=2), 16).eval()
    q, tokens = torch.randn(3, 16), torch.randn(3, 10, 16)
    with torch.no_grad():
        out, attn = mod(q, tokens)
        assert out.shape == (3, 16) and attn.shape == (3, 10)
        assert (attn >= 0).all() and torch.allclose(attn.sum(1), torch.ones(3), atol=1e-6)
        assert (attn.std(1) > 1e-3).all()  # not the constant softmax of a single key
        for j in (0, 9):  # one patch token changed: that image's output changes, the others' not
            t2 = tokens.clone()
            t2[0, j] = torch.randn(16)  # (a constant shift would vanish in the LayerNorm)
            out2, attn2 = mod(q, t2)
            assert (out2[0] - out[0]).abs().max() > 1e-4 and torch.allclose(out2[1:], out[1:])
            assert not torch.allclose(attn2[0], attn[0])
        q2 = q.clone()
        q2[0] = torch.randn(16)
        assert not torch.allclose(mod(q2, tokens)[1][0], attn[0])  # the map depends on the prompt


def cross_attention_by_hand(mod, q, tokens, pre=True):
    """Multi-head attention of one query over the tokens (both layer-normed first when `pre`),
    written out: per head softmax(q k^T / sqrt(d)) v, concatenated, output projection; the map
    averaged over heads."""
    a = mod.cross
    e, h = q.shape[1], a.num_heads
    d = e // h
    wq, wk, wv = a.in_proj_weight.split(e)
    bq, bk, bv = a.in_proj_bias.split(e)
    qn = F.layer_norm(q, (e,), mod.ln_q.weight, mod.ln_q.bias) if pre else q
    kn = F.layer_norm(tokens, (e,), mod.ln_kv.weight, mod.ln_kv.bias) if pre else tokens
    outs, maps = [], []
    for b in range(len(q)):
        heads, weights = [], []
        for i in range(h):
            sl = slice(i * d, (i + 1) * d)
            qi = qn[b] @ wq[sl].T + bq[sl]
            ki, vi = kn[b] @ wk[sl].T + bk[sl], kn[b] @ wv[sl].T + bv[sl]
            w = torch.softmax(ki @ qi / math.sqrt(d), 0)
            heads.append(w @ vi)
            weights.append(w)
        outs.append(a.out_proj(torch.cat(heads)))
        maps.append(torch.stack(weights).mean(0))
    return torch.stack(outs), torch.stack(maps)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_interaction_reweighting_formulas_by_hand(norm):
    """With no blocks the output is LayerNorm(query + cross-attention output) (pre-norm: of the
    normed query and tokens); the map is the head-averaged softmax over the patches; the re-weighted
    tokens reach the blocks (seen through one identity block)."""
    torch.manual_seed(0)
    q, tokens = torch.randn(2, 8), torch.randn(2, 5, 8)
    rules = (("scale", lambda a: 5 * a), ("residual", lambda a: 1 + 5 * a), ("none", lambda a: 1 + 0 * a))
    for rule, weight in rules:
        mod = Interaction(InteractionCfg(blocks=0, heads=2, reweight=rule, norm=norm), 8).eval()
        seen = {}
        mod.blocks.append(torch.nn.Identity())
        mod.blocks[0].register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
        with torch.no_grad():
            out, attn = mod(q, tokens)
            ref_out, ref_map = cross_attention_by_hand(mod, q, tokens, pre=norm == "pre")
        ln = mod.ln_out if norm == "pre" else mod.ln_q  # post-norm: the residual sum is normed once
        assert torch.allclose(attn, ref_map, atol=1e-6)
        assert torch.allclose(out, F.layer_norm(q + ref_out, (8,), ln.weight, ln.bias), atol=1e-5)
        assert torch.allclose(seen["x"][:, 1:], tokens * weight(ref_map)[..., None], atol=1e-6), rule


def test_global_token_in_keys_keeps_the_patch_map_a_distribution():
    torch.manual_seed(0)
    mod = Interaction(InteractionCfg(blocks=1, heads=2, global_in_kv=True), 16).eval()
    with torch.no_grad():
        out, attn = mod(torch.randn(3, 16), torch.randn(3, 7, 16), torch.randn(3, 16))
    assert attn.shape == (3, 7) and torch.allclose(attn.sum(1), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("backbone, grid", [("tiny-vit", (8, 8)), ("tiny-rn", (4, 4))])
def test_attention_maps_over_the_patch_grid(backbone, grid):
    cfg = tiny_cfg(backbone)
    ctx, model = setup(cfg)
    model.eval()
    x = images()
    for fixed in (None, model.fixed_prompt().detach()):
        maps = model.attention_maps(x, fixed)
        assert maps.shape == (4, *grid) and (maps >= 0).all()
        assert torch.allclose(maps.sum((1, 2)), torch.ones(4), atol=1e-5)
        assert (maps.flatten(1).std(1) > 0).all()
    assert not torch.allclose(model.attention_maps(x), model.attention_maps(x, fixed))


# --------------------------------------------------------------------------- losses

def cosine_supcon_by_hand(a, b, y, t):
    """The paper's L_SupCon: both directions over cosine similarities (Eq. 1) / t."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return supcon_by_hand(a, b, y, y, t) + supcon_by_hand(b, a, y, y, t)


def random_output(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return PromptSGOutput(r(n, 4), r(n, 3), r(n, 4), r(n, 4), None, (r(n, 6), r(n, 5), r(n, 4)))


def test_supcon_and_total_hand_computed():
    y = torch.tensor([0, 0, 1, 1, 2])
    out = random_output()
    cfg = tiny_cfg()
    assert cfg.optim.supcon_normalize and cfg.optim.supcon_temperature is None  # the paper's cosine
    terms = promptsg_terms(out, y, cfg, 0.07)
    supcon = cosine_supcon_by_hand(out.image, out.prompt, y, 0.07)
    assert terms["supcon"].item() == pytest.approx(supcon, abs=1e-4)
    assert terms["id"].item() == pytest.approx(smoothed_ce_by_hand(out.logits, y, 0.1), abs=1e-5)
    # the triplet: the identity feature plus the encoder's three states (the paper's §4.3)
    triplet = sum(triplet_by_hand(f, y) for f in (out.feature, *out.hidden))
    assert terms["triplet"].item() == pytest.approx(triplet, abs=1e-5)
    from clipfh_utils.training.losses import weighted_total
    total = weighted_total(terms, cfg.optim.loss_weights)
    assert total.item() == pytest.approx(terms["id"].item() + triplet + 0.5 * supcon, abs=1e-4)
    with pytest.raises(ValueError, match="supcon_temperature is null"):
        promptsg_terms(out, y, cfg)  # the backbone's temperature must come from the model
    # the raw ablation (CLIP-ReID's convention), a fixed temperature, one direction only
    raw = tiny_cfg(optim={"supcon_normalize": False, "supcon_temperature": 1.0})
    expected = supcon_by_hand(out.image, out.prompt, y, y) + supcon_by_hand(out.prompt, out.image, y, y)
    assert promptsg_terms(out, y, raw)["supcon"].item() == pytest.approx(expected, abs=1e-4)
    fixed = tiny_cfg(optim={"supcon_temperature": 0.5})
    assert promptsg_terms(out, y, fixed, 0.07)["supcon"].item() == pytest.approx(
        cosine_supcon_by_hand(out.image, out.prompt, y, 0.5), abs=1e-4)
    a, b = F.normalize(out.image, dim=1), F.normalize(out.prompt, dim=1)
    for direction, ref in (("i2t", supcon_by_hand(a, b, y, y, 0.07)), ("t2i", supcon_by_hand(b, a, y, y, 0.07))):
        one = tiny_cfg(optim={"supcon_directions": direction})
        assert promptsg_terms(out, y, one, 0.07)["supcon"].item() == pytest.approx(ref, abs=1e-4)
    with pytest.raises(ConfigError, match="supcon_temperature: the raw dot product .* needs a fixed temperature"):
        tiny_cfg(optim={"supcon_normalize": False})


def test_the_phase_loss_is_the_weighted_sum_of_the_models_terms():
    cfg = tiny_cfg()
    data = tiny_data()
    ctx, model = setup(cfg)
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    model.train()
    x, y = normalize(data.images[:8], ctx.clip.mean, ctx.clip.std), data.labels[:8]
    total, terms = phase.loss(x, y)
    assert list(phase.terms) == ["id", "triplet", "supcon"] and set(terms) == set(phase.terms)
    with torch.no_grad():
        out = model(x, y)
    supcon = cosine_supcon_by_hand(out.image, out.prompt, y, model.supcon_temperature)
    assert terms["supcon"].item() == pytest.approx(supcon, rel=1e-4)
    assert total.item() == pytest.approx((terms["id"] + terms["triplet"] + 0.5 * terms["supcon"]).item(), rel=1e-6)


# --------------------------------------------------------------------------- inference

@pytest.mark.parametrize("backbone", BACKBONES)
def test_both_inference_modes_give_normalised_features_of_the_declared_shape(backbone):
    cfg = tiny_cfg(backbone)
    ctx, model = setup(cfg)
    model.eval()
    embedders = METHOD.embedders(cfg, model)
    assert list(embedders) == ["composed", "fixed"]
    imgs = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    feats = {}
    for mode, fn in embedders.items():
        with torch.no_grad():
            raw = fn(normalize(imgs, ctx.clip.mean, ctx.clip.std))  # the mode's own output: its declared shape
        assert raw.shape == (5, model.embed_dim)
        # what the evaluator stores: this output, L2-normalised (batching changes nothing in eval mode)
        f = embed_images(fn, imgs, ctx.clip.mean, ctx.clip.std, CPU, batch_size=2, amp=False)
        assert torch.allclose(f, raw / raw.norm(dim=1, keepdim=True), atol=1e-5)
        assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-5)
        feats[mode] = f
    assert not torch.allclose(feats["composed"], feats["fixed"], atol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_retrieval_feature_is_the_interaction_output(backbone):
    """Recomputed part by part: the composed mode evaluates interaction(composed prompt, projected
    patch tokens), the fixed mode interaction(fixed prompt, ...): never the plain image feature."""
    cfg = tiny_cfg(backbone)
    ctx, model = setup(cfg)
    model.eval()
    x = images()
    embedders = METHOD.embedders(cfg, model)
    with torch.no_grad():
        f = model.backbone(x)
        tokens = model.backbone.project_tokens(f.tokens)
        composed = model.interaction(model.compose(model.inversion(f.proj)), tokens)[0]
        fixed_prompt = ctx.clip.model.encode_text(ctx.clip.tokenizer(["A photo of a hand."]))[0]
        fixed = model.interaction(fixed_prompt.expand(4, -1), tokens)[0]
        got_c, got_f = embedders["composed"](x), embedders["fixed"](x)
    assert torch.allclose(got_c, composed, atol=1e-5) and torch.allclose(got_f, fixed, atol=1e-5)
    for got in (got_c, got_f):
        assert not torch.allclose(F.normalize(got, dim=1), F.normalize(f.proj, dim=1), atol=1e-2)
    with torch.no_grad():  # and a change in the interaction module shows in what is evaluated
        model.interaction.cross.out_proj.bias.add_(torch.linspace(-1, 1, model.embed_dim))  # not a constant shift
        assert not torch.allclose(embedders["composed"](x), got_c, atol=1e-4)


def test_the_fixed_prompt_is_encoded_once():
    cfg = tiny_cfg()
    _, model = setup(cfg)
    model.eval()
    calls = []
    model.text.register_forward_hook(lambda *a: calls.append(1))
    embedders = METHOD.embedders(cfg, model)
    assert len(calls) == 1
    with torch.no_grad():
        for _ in range(3):
            embedders["fixed"](images(2))
        assert len(calls) == 1
        embedders["composed"](images(2))
    assert len(calls) == 2  # the composed prompt: one text pass per batch (one per template)


def test_template_ensemble_averages_prompts_at_inference(tmp_path, monkeypatch):
    from clipfh_utils.methods.promptsg import templates
    path = tmp_path / "t.yaml"
    path.write_text("mine:\n  - 'A photo of a X hand.'\n  - 'A close-up of the back of a X hand.'\n"
                    "bad:\n  - 'A photo of a hand.'\n")
    monkeypatch.setattr(templates, "TEMPLATES_FILE", path)
    cfg = tiny_cfg(prompt={"ensemble": "mine"})
    ctx, model = setup(cfg)
    model.eval()
    assert model.inference_fixed_sentences == ["A photo of a hand.", "A close-up of the back of a hand."]
    assert model.fixed_sentences == ["A photo of a hand."]  # training: the ensemble is inference only
    tok, clip_model = ctx.clip.tokenizer, ctx.clip.model
    x = images(3)
    with torch.no_grad():
        fixed = model.fixed_prompt(inference=True)
        assert torch.allclose(fixed, clip_model.encode_text(tok(model.inference_fixed_sentences)).mean(0), atol=1e-5)
        assert torch.allclose(model.fixed_prompt(), clip_model.encode_text(tok(["A photo of a hand."]))[0], atol=1e-5)
        f = model.backbone(x)
        pseudo = model.inversion(f.proj)
        word = torch.stack([model.compose(pseudo, [t]) for t in model.ensemble]).mean(0)
        tokens = model.backbone.project_tokens(f.tokens)
        assert torch.allclose(model.embed(x), model.interaction(word, tokens)[0], atol=1e-5)
        # training uses the config's template alone
        assert torch.allclose(model.compose(pseudo), model.compose(pseudo, [model.ensemble[0]]), atol=1e-6)
    with pytest.raises(ConfigError, match=r"t.yaml: bad\[0\]: .*placeholder word 'X' exactly once"):
        tiny_cfg(prompt={"ensemble": "bad"})
    with pytest.raises(ConfigError, match="t.yaml: no template set 'nope' .sets: mine, bad"):
        tiny_cfg(prompt={"ensemble": "nope"})


def test_shipped_template_sets_are_valid():
    for name in ("default", "hands"):
        for t in load_template_set(name):
            assert "X" not in fixed_sentence(t) and fixed_sentence(t).endswith(".")
    assert fixed_sentence("A photo of a X hand.") == "A photo of a hand."


# --------------------------------------------------------------------------- variants (ablations)

def test_without_inversion_every_prompt_is_the_fixed_one_and_lambda_must_be_zero():
    with pytest.raises(ConfigError, match=r"test.optim.loss_weights.supcon: must be 0 here .*same fixed prompt"):
        tiny_cfg(inversion={"enabled": False})
    cfg = tiny_cfg(inversion={"enabled": False}, optim={"loss_weights": {"id": 1, "triplet": 1, "supcon": 0}})
    data = tiny_data()
    ctx, model = setup(cfg)
    assert model.inversion is None and list(METHOD.embedders(cfg, model)) == ["fixed"]
    assert "λ is forced to 0" in cfg.settings()["note"]
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    phase.start()
    model.train()
    out = model(normalize(data.images[:8], ctx.clip.mean, ctx.clip.std), data.labels[:8])
    assert torch.allclose(out.prompt, out.prompt[:1].expand(8, -1))
    assert list(phase.terms) == ["id", "triplet"]


def test_baseline_is_the_image_encoder_with_id_and_triplet():
    with pytest.raises(ConfigError, match="supcon: must be 0 here .the baseline has no prompt"):
        tiny_cfg(variant="baseline")
    cfg = tiny_cfg(variant="baseline", optim={"loss_weights": {"id": 1, "triplet": 1}})
    data = tiny_data()
    ctx, model = setup(cfg)
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    assert list(phase.terms) == ["id", "triplet"]
    # the new module is the BNNeck head alone: its BN bias frozen, its classifier bias-free
    assert {g["name"] for g in phase.optimizer.param_groups} == {"image_encoder", "image_encoder_bias",
                                                                 "new_modules"}
    model.eval()
    (mode, embed), = METHOD.embedders(cfg, model).items()
    x = images()
    with torch.no_grad():
        assert mode == "" and torch.equal(embed(x), ctx.clip.model.encode_image(x))


def test_without_the_interaction_module_the_projected_feature_is_the_identity_feature():
    """The paper's Table 3 "w/o MIM": ID, triplet and retrieval use the projected image feature;
    the composed prompt still serves SupCon (and the inversion network still learns through it)."""
    cfg = tiny_cfg(interaction={"enabled": False, "heads": 2})
    data = tiny_data()
    ctx, model = setup(cfg)
    assert model.interaction is None and "no interaction module" in cfg.settings()["note"]
    phase = train_phase(cfg, model, data, ctx, PKSampler(data.labels.tolist(), 2, 2))
    assert list(phase.terms) == ["id", "triplet", "supcon"]
    model.train()
    x, y = normalize(data.images[:8], ctx.clip.mean, ctx.clip.std), data.labels[:8]
    out = model(x, y)
    assert out.feature is out.image and out.attention is None
    assert torch.allclose(out.logits, model.head.classifier(model.head.bn(out.image)))
    optimizer_step(phase.loss, phase.optimizer, phase.inputs(torch.arange(8)), phase.terms, CPU, False)
    assert all(p.grad.abs().sum() > 0 for p in model.inversion.mlp.parameters())
    model.eval()
    (mode, embed), = METHOD.embedders(cfg, model).items()
    with torch.no_grad():
        assert mode == "" and torch.allclose(embed(x), model.backbone(x).proj)
    assert not callable(model.attention_maps)  # no map: notebook 03 and explain/maps.py skip the model
    with pytest.raises(ConfigError, match="interaction.enabled: without the interaction module and the inversion"):
        tiny_cfg(interaction={"enabled": False}, inversion={"enabled": False},
                 optim={"loss_weights": {"id": 1, "triplet": 1, "supcon": 0}})


def test_config_errors_are_one_line_and_name_the_key():
    with pytest.raises(ConfigError, match=r"optim.loss_weights.i2t: unknown loss term"):
        tiny_cfg(optim={"loss_weights": {"id": 1, "i2t": 1}})
    with pytest.raises(ConfigError, match=r"prompt.template: .*exactly once"):
        tiny_cfg(prompt={"template": "A photo of a hand."})
    with pytest.raises(ValueError, match="interaction.heads: 3 heads do not divide the joint width 64"):
        setup(tiny_cfg(interaction={"heads": 3}))


# --------------------------------------------------------------------------- training end to end

def test_step_decay_by_hand():
    # x0.1 every 20 epochs, epochs numbered 1..60: 1-20 full, 21-40 0.1, 41-60 0.01
    assert [step_decay(e, 20) for e in (1, 20, 21, 40, 41, 60)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    # a 2-epoch warm-up from 0.1 (CLIP-ReID's formula): epoch 1 at 0.1 * 0.5 + 0.5
    assert step_decay(1, 3, 0.5, 2, 0.1) == pytest.approx(0.55)
    assert [step_decay(e, 3, 0.5, 2, 0.1) for e in (2, 3, 4, 7)] == pytest.approx([1, 1, 0.5, 0.25])


def test_trains_logs_the_recipe_and_reloads_the_same_model(tmp_path):
    cfg = tiny_cfg(optim={"epochs": 3, "step_size": 2, "lr": 1e-3, "new_lr": 4e-3})
    data = tiny_data()

    def once():
        ctx, _ = setup(cfg)
        return train_or_load(METHOD, cfg, ctx, lambda: data, data.n_classes, tmp_path, resume=False,
                             progress=False, label="t")

    first, trained = once()
    again, trained_again = once()
    assert trained and not trained_again
    log = load_log(tmp_path)
    ep = log.groupby("epoch").first()
    for e in (1, 2, 3):
        assert ep.loc[e, "lr_image_encoder"] == pytest.approx(1e-3 * step_decay(e, 2))
        assert ep.loc[e, "lr_new_modules"] == pytest.approx(4e-3 * step_decay(e, 2))
    assert {"id", "triplet", "supcon", "total"} <= set(log.columns)
    x = images()
    for a, b in zip(METHOD.embedders(cfg, first).values(), METHOD.embedders(cfg, again).values()):
        with torch.no_grad():
            assert torch.allclose(a(x), b(x), atol=1e-6)
    saved = torch.load(tmp_path / "weights.pt", weights_only=False)["states"]["model"]
    assert not any(k.startswith(("text.", "template.")) for k in saved)
    assert any(k.startswith("inversion.") for k in saved) and any(k.startswith("interaction.") for k in saved)
    assert math.isfinite(log["total"].iloc[-1])


# --------------------------------------------------------------------------- the shipped configs

ABLATIONS = {  # config suffix -> the keys in which it may differ from its profile's main config (the first must)
    "blocks0": ["interaction.blocks"], "blocks1": ["interaction.blocks"],
    "lambda0": ["optim.loss_weights.supcon"], "lambda1": ["optim.loss_weights.supcon"],
    "no_inversion": ["inversion.enabled", "optim.loss_weights.supcon"],
    "baseline": ["variant", "optim.loss_weights.supcon"],
    "text_trained": ["text.train", "text.lr"],
    "template": ["prompt.template", "prompt.fixed"],
    "ensemble": ["prompt.ensemble"],
    "prenorm": ["interaction.norm"], "reweight_none": ["interaction.reweight"],
    "no_interaction": ["interaction.enabled"],
    "supcon_i2t": ["optim.supcon_directions"], "supcon_t2i": ["optim.supcon_directions"],
    "supcon_raw": ["optim.supcon_normalize", "optim.supcon_temperature"],
    "triplet_feature": ["optim.triplet_features"],
}


@pytest.mark.parametrize("profile, main, prefix", [("demo_ablations", "stage3_demo_tiny_vit", "stage3_demo_"),
                                                   ("full_ablations", "stage3_vitb16", "stage3_vitb16_")])
def test_each_ablation_config_changes_one_thing(profile, main, prefix):
    """One line each in the comparison, and each differs from the method's main config only in the
    setting it ablates (the recipe's other values are not silently different)."""
    from clipfh_utils.config import config_diff, load_profile, to_dict
    from clipfh_utils.pipeline.resolve import resolve_experiments
    exps = {e.name: e for e in resolve_experiments(load_profile(profile))}
    base = to_dict(exps[main].cfg)
    for suffix, keys in ABLATIONS.items():
        diff = config_diff(base, to_dict(exps[prefix + suffix].cfg))
        changed = {k for k in diff if k not in ("name", "seeds", "compile_mode", "optim.monitor_every")}
        # a weight absent from one side shows as None: the baseline has no supcon entry at all
        assert keys[0] in changed and changed <= set(keys), (suffix, diff)
    assert exps[prefix + "no_inversion"].cfg.optim.loss_weights["supcon"] == 0
    assert sum(e.stage == "stage3" for e in exps.values()) == len(ABLATIONS) + 1 + (profile == "demo_ablations")


@pytest.mark.slow
def test_pipeline_evaluates_both_modes_and_load_run_gives_the_same_features(tmp_path):
    """Through the pipeline: one metrics file and comparison line per inference mode, and a finished
    run reloaded by `load_run` embeds exactly as evaluated, in either mode."""
    from clipfh_utils.pipeline import load_run, open_run
    from clipfh_utils.report.results import comparison_table, invocation_metrics
    fast = ["experiments=[promptsg/stage3_demo_tiny_vit]", "protocol.n_splits=2",
            "stage3_demo_tiny_vit.optim.epochs=2"]
    (res,) = open_run("demo", tmp_path / "out", fast).run_stage("stage3", progress=False)
    assert set(res.metrics_files) == {"composed", "fixed"}
    assert {p.name for p in res.metrics_files.values()} == {"synthetic-dorsal_right__composed__n2.json",
                                                           "synthetic-dorsal_right__fixed__n2.json"}
    table = comparison_table(invocation_metrics(tmp_path / "out"), "clipfh")
    assert list(table["model"]) == ["stage3_demo_tiny_vit [composed]", "stage3_demo_tiny_vit [fixed]"]
    assert (table["embed_img_s"] > 0).all() and list(table["mode"]) == ["composed", "fixed"]
    rows = res.dataset.protocol().queries[0][:4]
    for mode in ("composed", "fixed"):
        m = load_run(res.run_name, search=[tmp_path], device="cpu", mode=mode)
        ev = res.first_eval(mode)
        x = ev.images[[ev.bank.index[r.image_name] for r in rows]]
        assert torch.allclose(m.embed(x), ev.bank.take(rows)[0], atol=1e-5)
    assert load_run(res.run_name, search=[tmp_path], device="cpu").mode == "composed"  # the first mode
    with pytest.raises(ValueError, match="inference mode 'nope': this run's modes are 'composed', 'fixed'"):
        load_run(res.run_name, search=[tmp_path], device="cpu", mode="nope")
