"""Configs: every shipped file loads; typos, types and ranges are errors naming file or override;
overrides address the profile, one experiment or all of them, and merge deeply and in order."""
import pytest

from clipfh_utils.config import (CONFIG_DIR, ConfigError, Profile, build, config_diff, load_profile,
                                 merge_into, parse_overrides)
from clipfh_utils.methods.clip_reid.config import ClipReidCfg
from clipfh_utils.pipeline.resolve import resolve_experiments


def experiments(profile, *items):
    prof = load_profile(profile, list(items))
    return {e.name: e for e in resolve_experiments(prof, f"profiles/{profile}.yaml")}


def test_every_shipped_config_loads():
    for path in sorted((CONFIG_DIR / "profiles").glob("*.yaml")):
        prof = load_profile(path)
        assert prof.name == path.stem
        assert resolve_experiments(prof, str(path))
    method_configs = sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p.parent.name != "profiles")
    assert method_configs
    for path in method_configs:
        prof = load_profile("demo", [f"experiments=[{path.parent.name}/{path.stem}]"])
        (exp,) = resolve_experiments(prof)
        assert exp.name == path.stem and exp.method.name == path.parent.name


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("method: clip_reid\nfinetune:\n  epochs: 2\n  lr_typo: 0.1\n")
    with pytest.raises(ConfigError) as e:
        resolve_experiments(load_profile("demo", [f"experiments=[{p}]"]))
    msg = str(e.value)
    assert "bad.yaml" in msg and "finetune" in msg and "lr_typo" in msg and "\n" not in msg


def test_wrong_types_and_ranges_are_rejected():
    with pytest.raises(ConfigError, match="protocol.n_splits"):
        build(Profile, {"protocol": {"n_splits": "ten"}}, "p")
    with pytest.raises(ConfigError, match=r"protocol.n_splits: must be >= 1, got 0"):
        build(Profile, {"protocol": {"n_splits": 0}}, "p")
    with pytest.raises(ConfigError, match=r"finetune.k: must be >= 2"):
        build(ClipReidCfg, {"finetune": {"k": 1}}, "s")
    with pytest.raises(ConfigError, match="image_size"):
        build(ClipReidCfg, {"image_size": [224]}, "s")
    with pytest.raises(ConfigError, match="classifier: must be one of 'linear', 'arcface'"):
        build(ClipReidCfg, {"finetune": {"classifier": "cosface"}}, "s")
    with pytest.raises(ConfigError, match="compile_mode"):
        build(ClipReidCfg, {"compile_mode": "fastest"}, "s")
    with pytest.raises(ConfigError, match="seeds: give at least one seed"):
        build(ClipReidCfg, {"seeds": []}, "s")
    with pytest.raises(ConfigError, match="aspect: must be one of"):
        build(Profile, {"datasets": [{"aspect": "dorsal middle"}]}, "p")


def test_loss_weights_are_checked_against_the_registry():
    with pytest.raises(ConfigError, match=r"loss_weights.idd: unknown loss term .*id, triplet, i2t, center"):
        experiments("demo", "demo_tiny_vit.finetune.loss_weights.idd=1")
    with pytest.raises(ConfigError, match="supcon: unknown loss term .registered but not used"):
        experiments("demo", "demo_tiny_vit.finetune.loss_weights.supcon=1")


def test_override_routing_profile_experiment_and_star():
    exps = experiments("demo", "protocol.n_splits=3", "demo_tiny_vit.finetune.lr=0.01", "*.seeds=[4]",
                       "stage1.flip_test=true")
    assert exps["demo_tiny_vit"].cfg.finetune.lr == 0.01
    assert exps["demo_tiny_rn"].cfg.finetune.lr == 3e-3  # the other experiment is untouched
    assert all(e.cfg.seeds == [4] for e in exps.values())
    assert exps["zero_shot_tiny-vit"].cfg.flip_test and not exps["demo_tiny_vit"].cfg.flip_test
    assert load_profile("demo", ["protocol.n_splits=3"]).protocol.n_splits == 3
    # '*' skips experiments without the section (zero-shot has no finetune) ...
    exps = experiments("demo", "*.finetune.epochs=3")
    assert exps["demo_tiny_rn"].cfg.finetune.epochs == 3
    assert exps["demo_tiny_vit"].overrides == ["-p '*.finetune.epochs=3'"]
    # ... but an override that concerns no experiment at all is an error
    with pytest.raises(ConfigError, match=r"-p 'nosuch.lr=1': no experiment .* named 'nosuch'"):
        experiments("demo", "nosuch.lr=1")


def test_errors_name_the_override_they_came_from():
    with pytest.raises(ConfigError, match=r"^-p 'demo_tiny_vit.finetune.lrr=1': finetune: unknown key 'lrr'"):
        experiments("demo", "demo_tiny_vit.finetune.lrr=1")
    with pytest.raises(ConfigError, match=r"^-p 'protocol.n_splits=-1': protocol.n_splits: must be >= 1"):
        load_profile("demo", ["protocol.n_splits=-1"])
    with pytest.raises(ConfigError, match="unknown key 'nsplits'"):
        load_profile("demo", ["protocol.nsplits=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["protocol.n_splits"])


def test_overrides_merge_deeply_and_in_order():
    tree = parse_overrides(["finetune.augment.pad=2", "finetune={lr: 0.5}", "finetune.lr=0.25"])
    assert tree == {"finetune": {"augment": {"pad": 2}, "lr": 0.25}}  # nothing dropped, last wins
    assert merge_into({"a": {"b": 1, "c": 2}}, "a", {"b": 3}) == {"a": {"b": 3, "c": 2}}
    exps = experiments("demo", "demo_tiny_vit.finetune.augment.pad=2",
                       "demo_tiny_vit.finetune={augment: {erase: 0.0}}", "*.seeds=[0]", "demo_tiny_vit.seeds=[1]")
    aug = exps["demo_tiny_vit"].cfg.finetune.augment
    assert (aug.pad, aug.erase, aug.flip) == (2, 0.0, 0.5)
    assert exps["demo_tiny_vit"].cfg.seeds == [1] and exps["demo_tiny_rn"].cfg.seeds == [0]


def test_unknown_profile_name_lists_available():
    with pytest.raises(ConfigError, match="demo"):
        load_profile("no_such_profile")


def test_config_diff_lists_dotted_keys():
    a = {"finetune": {"lr": 1, "augment": {"pad": 10}}, "seeds": [0]}
    b = {"finetune": {"lr": 2, "augment": {"pad": 10}}, "seeds": [0, 1]}
    assert config_diff(a, b) == {"finetune.lr": (1, 2), "seeds": ([0], [0, 1])}


def test_reference_recipes_are_the_published_values():
    """The CLIP-ReID reference configs (vit_clipreid.yml / cnn_clipreid.yml), as shipped here."""
    exps = experiments("full")
    vit, rn = exps["stage2_vitb16"].cfg, exps["stage2_rn50"].cfg
    assert vit.finetune.loss_weights == {"id": 0.25, "triplet": 1.0, "i2t": 1.0}
    assert rn.finetune.loss_weights == {"id": 1.0, "triplet": 1.0, "i2t": 1.0}
    assert (vit.finetune.lr, vit.finetune.milestones, vit.finetune.epochs) == (5e-6, [30, 50], 60)
    assert (rn.finetune.lr, rn.finetune.milestones, rn.finetune.epochs) == (3.5e-4, [40, 70], 120)
    assert vit.finetune.bias_lr_factor == rn.finetune.bias_lr_factor == 2
    assert (vit.finetune.weight_decay, rn.finetune.weight_decay, rn.finetune.weight_decay_bias) == (1e-4, 5e-4, 5e-4)
    assert (vit.finetune.warmup_factor, rn.finetune.warmup_factor) == (0.1, 0.01)
    assert rn.backbone.last_stride == 1 and vit.backbone.last_stride == 2
    assert (vit.prompt.epochs, rn.prompt.epochs) == (120, 60)


def test_the_config_package_exports_every_public_name_of_its_modules():
    """`from clipfh_utils.config import X` works for every public name a module of the package defines
    (one added to a module without exporting it fails here), each from the module defining it."""
    import ast
    import importlib
    from pathlib import Path
    import clipfh_utils.config as config
    defined = {}
    for path in sorted(Path(config.__file__).parent.glob("[!_]*.py")):
        for node in ast.parse(path.read_text()).body:
            targets = ([node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                       [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else
                       [node.target.id] if isinstance(node, ast.AnnAssign) else [])
            defined.update({n: path.stem for n in targets if not n.startswith("_")})
    assert {"load_profile", "build", "parse_overrides", "repo_path", "Profile", "ConfigError"} <= set(defined)
    assert sorted(config.__all__) == sorted(defined)
    for name, module in defined.items():
        assert getattr(config, name) is getattr(importlib.import_module(f"clipfh_utils.config.{module}"), name)
