"""Locked versions: requirements.lock covers pyproject's ranges and pins torch as `make install` needs,
`make install` and environment.yml install it, and a run reproduced with other versions of its key
packages than its run.json records says so, once, naming them."""
import json
import re
import tomllib
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement

from clipfh_utils.pipeline import load_run, open_run
from clipfh_utils.pipeline import run_state
from clipfh_utils.provenance import KEY_PACKAGES, version_drift
from clipfh_utils.runs import read_run, write_run

from .conftest import REPO
from .test_runs import FAST


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert _ and " " not in version, f"requirements.lock: '{line}' is not an exact pin"
            pins[canonical(name)] = version
    return pins


def test_the_lock_pins_every_dependency_within_pyprojects_ranges():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = locked()
    for req in wanted:
        assert canonical(req.name) in pins, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[canonical(req.name)], prereleases=True), (req, pins[canonical(req.name)])
    make = (REPO / "Makefile").read_text()
    torch_pin = dict(x.split("==") for x in re.search(r"TORCH_PIN \?= (.*)", make).group(1).split())
    assert {k: pins[k] for k in torch_pin} == torch_pin == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert "pip install -r requirements.lock" in make
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section[0] == "-r requirements.lock"


def test_the_key_packages_installed_here_are_the_locked_versions():
    """The lock is what the tests run with (CI installs it; a drifted venv shows here)."""
    pins = locked()
    for name in KEY_PACKAGES:
        if name in pins:
            assert metadata.version(name).split("+")[0] == pins[name].split("+")[0], name


def test_version_drift_names_the_packages_that_differ():
    then = {"python": "3.11.7", "pip_freeze": ["torch==2.0.0", "numpy==1.26.0", "requests==2.0.0", "Pillow==10.0.0"]}
    now = {"python": "3.12.1", "pip_freeze": ["torch==2.14.1", "numpy==1.26.0", "requests==9.9.9", "timm==1.0.0"]}
    assert version_drift(then, now) == {"torch": ("2.0.0", "2.14.1"), "pillow": ("10.0.0", None),
                                        "timm": (None, "1.0.0"), "python": ("3.11.7", "3.12.1")}
    assert version_drift(now, now) == {} and version_drift({}, now) == {}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("versions") / "out"
    (res,) = open_run("demo", out, FAST).run_stage("stage2", progress=False)
    return out, res.run_dir


@pytest.mark.slow
def test_reproducing_a_run_with_other_versions_says_so_once(run_folder, monkeypatch, capsys):
    out, rdir = run_folder
    monkeypatch.setattr(run_state, "_drift_noted", set())
    load_run(rdir, seed=0)
    assert "was made with" not in capsys.readouterr().err  # same environment: silent
    rec = read_run(rdir)
    torch_now = metadata.version("torch")
    rec["environment"]["pip_freeze"] = [("torch==1.0.0" if x.lower().startswith("torch==") else x)
                                        for x in rec["environment"]["pip_freeze"]]
    write_run(rdir, rec)
    load_run(rdir, seed=0)
    load_run(rdir, seed=0)
    err = capsys.readouterr().err
    assert err.count("was made with") == 1
    (line,) = [x for x in err.splitlines() if "was made with" in x]
    assert f"run {rec['name']} was made with torch 1.0.0; loading it here with torch {torch_now}" in line
    monkeypatch.setattr(run_state, "_drift_noted", set())
    (res,) = open_run("demo", out, FAST + ["protocol.n_splits=3"]).run_stage("stage2", progress=False)
    assert res.trained_seeds == []
    assert f"re-evaluating it here with torch {torch_now}" in capsys.readouterr().err
    assert json.loads((rdir / "run.json").read_text())["environment"]["pip_freeze"] == rec["environment"]["pip_freeze"]
