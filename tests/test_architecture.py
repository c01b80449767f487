"""The package's shape: imports run one way, and a new method plugs in without touching the package."""
import ast
import contextlib
import sys
from pathlib import Path

import pytest

from clipfh_utils.methods import builtin_methods, get_method

PKG = Path(__file__).resolve().parents[1] / "clipfh_utils"

# what each part may import from the package (besides itself)
ALLOWED = {
    "config": set(),
    "runlog": set(),
    "console": set(),
    "atomic": {"console"},
    "locks": {"atomic", "console"},
    "provenance": {"config", "atomic"},
    "runs": {"config", "atomic", "locks", "provenance"},
    "data": {"config", "atomic", "console", "provenance"},
    "evaluation": {"data"},
    "backbones": {"config", "atomic", "provenance"},
    "training": {"config", "atomic", "console", "backbones", "evaluation", "runlog"},
    "methods": {"config", "atomic", "provenance", "backbones", "training", "evaluation", "data"},
    "report": {"config", "atomic", "console", "provenance", "runs", "evaluation", "data", "training"},
    "explain": {"config", "atomic", "backbones", "data", "evaluation"},
    "pipeline": {"config", "atomic", "console", "locks", "provenance", "runs", "runlog", "data", "evaluation",
                 "backbones", "training", "methods", "report"},
    "workbook": {"pipeline", "report", "runs", "evaluation", "explain"},
    "bench": {"config", "backbones", "training", "methods", "pipeline"},
    "cli": {"config", "console", "atomic", "locks", "runs", "data", "backbones", "pipeline", "bench"},
    "__main__": {"cli"},
    "__init__": {"pipeline"},
}



@contextlib.contextmanager
def planted(**files: str):
    """Modules planted in the package for one check (`report__x="..."` is report/x.py), always removed."""
    paths = [PKG.joinpath(*name.split("__")).with_suffix(".py") for name in files]
    for path, text in zip(paths, files.values()):
        path.write_text(text)
    try:
        yield
    finally:
        for path in paths:
            path.unlink()


def package_imports(path: Path) -> set[tuple[str, ...]]:
    """Package-internal imports of a module, as absolute dotted parts below clipfh_utils."""
    rel = path.relative_to(PKG).with_suffix("").parts
    here = list(rel[:-1]) if rel[-1] != "__init__" else list(rel[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
            mod = (node.module or "").split(".") if node.module else []
            if node.module:
                out.add(tuple(base + mod))
            else:
                out.update(tuple(base + [a.name]) for a in node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out.update(tuple(n.split(".")[1:]) for n in names if n.startswith("clipfh_utils."))
    return {o for o in out if o}


def test_imports_run_one_way():
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        part = path.relative_to(PKG).with_suffix("").parts[0]
        for imp in package_imports(path):
            target = imp[0]
            if target == part:
                continue
            if target not in ALLOWED[part]:
                problems.append(f"{path.relative_to(PKG)} imports {'.'.join(imp)}")
    assert not problems, problems


def test_no_method_imports_another_and_the_loop_imports_none():
    methods = builtin_methods()
    assert {"zero_shot", "clip_reid"} <= set(methods)
    for path in sorted((PKG / "methods").rglob("*.py")):
        rel = path.relative_to(PKG / "methods").parts
        own = rel[0] if len(rel) > 1 else None
        for imp in package_imports(path):
            if imp[0] == "methods" and len(imp) > 1 and imp[1] in methods:
                assert imp[1] == own, f"{path.relative_to(PKG)} imports method {imp[1]}"
    for path in sorted((PKG / "training").rglob("*.py")):
        assert not any(imp[0] in ("methods", "pipeline", "report") for imp in package_imports(path)), path


def test_the_import_check_can_fail(tmp_path, monkeypatch):
    """The checker sees relative imports: a loop importing a method is caught."""
    with planted(training___tmp_bad_import="from ..methods.clip_reid import METHOD\n"):
        with pytest.raises(AssertionError, match="_tmp_bad_import.py imports methods.clip_reid"):
            test_imports_run_one_way()


@pytest.mark.slow
def test_a_method_from_outside_the_package_trains_evaluates_and_reports(tmp_path):
    """tests/minimal_method.py: trained by the shared loop, scored by the evaluator, in the tables
    and the index, with no package file changed."""
    from clipfh_utils.pipeline import open_run
    from clipfh_utils.report.index import write_index
    from clipfh_utils.report.results import comparison_table, invocation_metrics
    from clipfh_utils.training.loop import load_log

    cfg = tmp_path / "minimal.yaml"
    cfg.write_text("method: tests.minimal_method\nname: minimal\nbackbone: {name: tiny-vit}\nepochs: 3\n")
    assert get_method("tests.minimal_method").stage == "baseline"
    run = open_run("demo", tmp_path / "out", [f"experiments=[stage1, {cfg}]", "protocol.n_splits=2",
                                              "backbones=[{name: tiny-vit}]"])
    (exp,) = run.experiments("baseline")
    (res,) = run.run_stage("baseline", progress=False)
    assert res.trained_seeds == [0] and res.run_name.startswith("minimal-")
    log = load_log(res.run_dir / "seed0")
    assert set(log["phase"]) == {"head"} and log["epoch"].max() == 3 and "triplet" in log
    run.run_stage("stage1", progress=False)
    table = comparison_table(invocation_metrics(run.run_dir, run.invocation), "clipfh")
    assert set(table["stage"]) == {"stage1", "baseline"}
    row = table.set_index("model").loc["minimal"]
    assert row["method"] == "minimal (test)" and row["splits"] == 2 and 0 < row["mAP_mean"] <= 100
    assert "minimal" in write_index(run.run_dir, run.invocation).read_text()
    assert "tests.minimal_method" in sys.modules


def test_every_pk_method_checks_its_batch_against_the_training_identities():
    """More identities per P×K batch than the training set has is named by each method's own key
    before anything trains (not by the sampler, mid-run, with another method's key)."""
    import functools
    from tests.test_clip_reid import tiny_cfg as reid_cfg
    from tests.test_cnn_baseline import tiny_cfg as cnn_cfg
    from tests.test_promptsg import tiny_cfg as psg_cfg
    for method, cfg, p in ((get_method("clip_reid"), reid_cfg(), "finetune.p"),
                           (get_method("promptsg"), psg_cfg(), "optim.p"),
                           (get_method("cnn_baseline"), cnn_cfg(), "train.p")):
        value = functools.reduce(getattr, p.split("."), cfg)
        assert method.check_data(cfg, value) == {}
        problem = method.check_data(cfg, value - 1)
        assert list(problem) == [p] and f"set {p} <= {value - 1}" in problem[p], (method.name, problem)


# --------------------------------------------------------------------------- one owner per idea

def module_graph() -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    """Module -> the package modules it imports (anywhere in it, function-level imports too)."""
    mods = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("").parts
        mods[rel[:-1] if rel[-1] == "__init__" else rel] = p

    def module_of(parts: tuple[str, ...]) -> tuple[str, ...]:
        while parts and parts not in mods:  # `from .x import name`: the module x
            parts = parts[:-1]
        return parts

    return {m: {module_of(i) for i in package_imports(p)} - {m, ()} for m, p in mods.items()}


def import_cycles() -> list[list[str]]:
    """Every set of modules that import each other, directly or around a loop (Tarjan's SCCs)."""
    graph = module_graph()
    index: dict = {}
    low: dict = {}
    stack: list = []
    cycles = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(".".join(w))
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_anywhere_in_the_package():
    assert import_cycles() == []


def test_the_cycle_check_can_fail():
    with planted(report___tmp_cycle_a="from . import _tmp_cycle_b\n",  # a function-level import closes it
                 report___tmp_cycle_b="def f():\n    from ._tmp_cycle_a import x\n"):
        assert ["report._tmp_cycle_a", "report._tmp_cycle_b"] in import_cycles()


def _code_strings(tree: ast.AST):
    """String constants of the code (f-string parts included), docstrings left out."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            yield n


# what composing a run name, a run, seed or metrics folder, or a metrics file name looks like
NAME_RULES = {
    "a metrics file's name": lambda s: any(t in s for t in (".per_query.csv", ".features.pt", "transfer__", "__n")),
}


def naming_problems() -> list[str]:
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        if rel == "runs.py":
            continue
        tree = ast.parse(path.read_text())
        for n in _code_strings(tree):
            for what, rule in NAME_RULES.items():
                if rule(n.value):
                    problems.append(f"{rel}:{n.lineno} composes {what} ({n.value!r})")
        for n in ast.walk(tree):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):  # path / "metrics", out / RUNS
                for side in (n.left, n.right):
                    if (isinstance(side, ast.Constant) and side.value in ("metrics", "runs")) or \
                            (isinstance(side, ast.Name) and side.id == "RUNS"):
                        problems.append(f"{rel}:{n.lineno} composes a run or metrics folder")
                    # (data/ names its split-list folders splits/<aspect>/seed<k>: not a run's)
                    if isinstance(side, ast.JoinedStr) and ast.unparse(side).startswith("f'seed{") \
                            and rel.split("/")[0] != "data":
                        problems.append(f"{rel}:{n.lineno} composes a seed folder")
            if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == "identity_hash":
                problems.append(f"{rel}:{n.lineno} composes a run name (identity_hash)")
    return problems


def test_only_runs_composes_run_and_metrics_file_names():
    assert naming_problems() == []


def test_the_naming_check_can_fail():
    with planted(report___tmp_bad_names='from pathlib import Path\n\n\ndef f(d, stem, s):\n'
                 '    return Path(d) / "metrics" / f"{stem}.per_query.csv.gz", Path(d) / f"seed{s}"\n'):
        problems = naming_problems()
    for what in ("metrics folder", "a metrics file's name", "a seed folder"):
        assert any(p.startswith("report/_tmp_bad_names.py:5") and what in p for p in problems), (what, problems)


def model_build_calls() -> list[str]:
    """Calls that build a method's model (`<...method...>.build(`, `.build_model(`, `METHOD.build(`)
    outside pipeline/seed_model.py and the methods themselves."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "methods" or str(rel) == "pipeline/seed_model.py":
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            receiver = ast.unparse(n.func.value)
            if n.func.attr == "build_model" or (n.func.attr == "build" and (
                    "method" in receiver.lower() or receiver.startswith("get_method("))):
                out.append(f"{rel}:{n.lineno} {ast.unparse(n.func)}(")
    return out


def test_seed_models_are_built_only_through_build_seed_model():
    assert model_build_calls() == []


def test_the_build_check_can_fail():
    with planted(report___tmp_bad_build="def f(exp, ctx):\n    return exp.method.build(exp.cfg, ctx, 3)\n"):
        assert model_build_calls() == ["report/_tmp_bad_build.py:2 exp.method.build("]


MAX_LINES = 450
OVER_THE_LIMIT_FOR_NOW: set[str] = set()  # report/plotting.py was split by job (report/fig_*.py)


def test_no_module_over_450_lines():
    """Small modules with one job each: a module past the limit holds two jobs; split it along them."""
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= OVER_THE_LIMIT_FOR_NOW, {k: v for k, v in long.items() if k not in OVER_THE_LIMIT_FOR_NOW}
