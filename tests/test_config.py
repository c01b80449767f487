import pytest

from clipfh_utils.config import (CONFIG_DIR, ConfigError, Profile, Stage2Cfg, build, load_profile,
                                 load_stage2, parse_overrides)


def test_every_shipped_config_loads():
    for path in sorted((CONFIG_DIR / "profiles").glob("*.yaml")):
        prof = load_profile(path)
        assert prof.name == path.stem
        for s2 in prof.stage2:
            assert isinstance(load_stage2(s2), Stage2Cfg)
    for path in sorted((CONFIG_DIR / "stage2").glob("*.yaml")):
        assert load_stage2(path).name == path.stem


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nfinetune:\n  epochs: 2\n  lr_typo: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_stage2(p)
    msg = str(e.value)
    assert "bad.yaml" in msg and "finetune" in msg and "lr_typo" in msg


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match="protocol.n_splits"):
        build(Profile, {"protocol": {"n_splits": "ten"}}, "p")
    with pytest.raises(ConfigError, match="stage1.flip"):
        build(Profile, {"stage1": {"flip": "yes"}}, "p")
    with pytest.raises(ConfigError, match="image_size"):
        build(Stage2Cfg, {"image_size": [224]}, "s")


def test_overrides_are_parsed_as_yaml_and_nested():
    o = parse_overrides(["protocol.n_splits=3", "stage1.flip=true", "device=cpu"])
    assert o == {"protocol": {"n_splits": 3}, "stage1": {"flip": True}, "device": "cpu"}
    prof = load_profile("demo", ["protocol.n_splits=3"])
    assert prof.protocol.n_splits == 3
    with pytest.raises(ConfigError, match="unknown key 'nsplits'"):
        load_profile("demo", ["protocol.nsplits=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["protocol.n_splits"])


def test_unknown_profile_name_lists_available():
    with pytest.raises(ConfigError, match="demo"):
        load_profile("no_such_profile")


def test_bad_classifier_value(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("finetune: {classifier: cosface}\n")
    with pytest.raises(ConfigError, match="classifier"):
        load_stage2(p)


def test_bad_compile_mode(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("compile_mode: fastest\n")
    with pytest.raises(ConfigError, match="compile_mode"):
        load_stage2(p)
