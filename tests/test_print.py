"""Print-ready exports: figure geometry, LaTeX that fits A4, the synthetic mark, escaping,
readable labels and rounding, the reading text quoting its table, notebooks without outputs."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from clipfh_utils.report import display, export, latex, plotting, results, story  # noqa: E402
from clipfh_utils.report.layout import layout_problems  # noqa: E402
from tests.test_reports import PROV, _epochs_log, _payload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LONG = ["PromptSG · tiny-vit (composed)", "CLIP-ReID · tiny-vit", "zero-shot CLIP · tiny-rn",
        "CLIP-ReID · tiny-rn", "zero-shot CLIP · tiny-vit", "PromptSG · tiny-vit (fixed)"]


def _bank(n: int, dim: int = 8, seed: int = 0):
    from clipfh_utils.evaluation import FeatureBank
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)


def _figures(tiny_dataset):
    """One figure of every kind the reports export, with the demo's long labels."""
    from clipfh_utils.data.handinfo import load_handinfo
    from clipfh_utils.data.protocol import build_protocol
    from clipfh_utils.evaluation import FeatureBank, evaluate_protocol
    csv, _ = tiny_dataset
    proto = build_protocol(load_handinfo(csv, check_sha256=False), "dorsal right", 0, 2)
    rows = proto.eval_rows()
    bank = FeatureBank(_bank(len(rows)), {r.image_name: i for i, r in enumerate(rows)})
    pq = []
    evaluate_protocol(bank, proto, per_query=pq)
    pq = pd.concat(pq)
    images = torch.randint(0, 255, (len(rows), 3, 40, 30), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    counts = pd.DataFrame({"aspect": ["dorsal right", "dorsal left", "palmar right", "palmar left"],
                           "images": [1500, 1400, 1600, 1450], "with_accessories": [100, 90, 80, 70],
                           "kept": [1400, 1310, 1520, 1380], "train_ids": [143, 140, 145, 141],
                           "test_ids": [47, 46, 48, 47]})
    curves = {lab: rng.uniform(0, 100, (10, 20)).cumsum(1).clip(0, 100) for lab in LONG}
    per_split = pd.DataFrame([{"model": lab, "protocol": p, "seed": s, "split": k, "mAP": rng.uniform(5, 60)}
                              for lab in LONG for p in ("clipfh", "mbanet") for s in (0, 1) for k in range(5)])
    table = pd.DataFrame({"model": LONG, "stage": ["stage3", "stage2", "stage1", "stage2", "stage1", "stage3"],
                          "mAP_mean": [50.0, 40, 10, 35, 12, 48], "mAP_ci_lo": [45.0, 35, 8, 30, 9, 40],
                          "mAP_ci_hi": [55.0, 45, 12, 40, 15, 56]})
    pairs = pd.DataFrame({"A": LONG[2:5], "B": LONG[:3], "d_mAP": [5.0, -3, 1], "d_mAP_lo": [1.0, -6, -2],
                          "d_mAP_hi": [9.0, -1, 4]})
    maps = {f"{lab} · Grad-CAM": torch.rand(3, 7, 7) for lab in LONG[:4]}
    regions = ["background", "fingers", "knuckles", "back of hand / palm", "wrist"]
    shares = pd.DataFrame(rng.uniform(0, 40, (6, 5)), columns=regions, index=[f"{lab} · rollout" for lab in LONG])
    area = pd.Series([60.0, 15, 5, 15, 5], index=regions)
    return [
        plotting.counts_bar(counts), plotting.images_per_id(proto),
        plotting.image_grid(images[:12], [f"id {r.person_id}" for r in rows[:12]], title="t"),
        plotting.cmc_band(curves), plotting.split_spread(per_split),
        plotting.comparison_bars(table), plotting.difference_forest(pairs),
        plotting.retrieval_figures(bank, images, proto, pq, LONG[0]),
        plotting.training_curves(_epochs_log(), title="t"),
        plotting.tsne_pair(bank.features[:40], bank.features[:40], [r.person_id for r in rows[:40]]),
        plotting.attention_grid(images[:3], maps, ["id 1", "id 2", "id 3"]),
        plotting.region_bars(shares, area)]


def test_every_figure_keeps_its_texts_and_legends_inside_and_apart(tiny_dataset):
    figs = _figures(tiny_dataset)
    try:
        problems = {f.get_label(): layout_problems(f) for f in figs}
        assert not {k: v for k, v in problems.items() if v}, problems
        for f in figs:  # the caption is outside: no suptitle, and an A4 text width at most
            assert not f.get_suptitle() and f.get_size_inches()[0] <= plotting.TEXT_WIDTH + 1e-6, f.get_label()
    finally:
        for f in figs:
            plt.close(f)


def test_figures_keep_their_layout_with_labels_that_name_a_dataset_too():
    """An invocation over several datasets labels models 'method · backbone [experiment] · dataset'
    (demo_beyond): the bars and the CMC still fit, wrapped or in one column."""
    longer = [f"{lab} [demo_tiny_resnet] · hd-synthetic/dorsal" for lab in LONG]
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"model": longer, "stage": ["stage3", "stage2", "stage1", "stage2", "baseline", "stage3"],
                          "mAP_mean": [50.0, 40, 10, 35, 12, 48], "mAP_ci_lo": [45.0, 35, 8, 30, 9, 40],
                          "mAP_ci_hi": [55.0, 45, 12, 40, 15, 56]})
    figs = [plotting.comparison_bars(table),
            plotting.cmc_band({lab: rng.uniform(0, 100, (4, 20)).cumsum(1).clip(0, 100) for lab in longer})]
    try:
        problems = {f.get_label(): layout_problems(f) for f in figs}
        assert not {k: v for k, v in problems.items() if v}, problems
    finally:
        for f in figs:
            plt.close(f)


def test_layout_check_sees_overlaps_and_legends_on_data():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(loc="center")                      # over the data area
    ax.text(0.5, 0.5, "one text"), ax.text(0.5, 0.5, "another text")
    ax.set_xlabel("x " * 200)                    # far wider than the figure
    problems = " | ".join(layout_problems(fig))
    assert "covers the data area" in problems and "overlap" in problems and "outside the figure" in problems
    plt.close(fig)




# --------------------------------------------------------------------------- LaTeX that fits A4

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None, reason="pdflatex missing: apt-get install -y texlive-latex-base texlive-latex-recommended "
                             "(.ci/run installs them)")
ARTICLE = ("\\documentclass{article}\n\\usepackage[a4paper,margin=2.5cm]{geometry}\n\\usepackage{booktabs}\n"
           "\\begin{document}\n%s\n\\end{document}\n")


def overfull(tex_files: list[Path], work: Path) -> dict[str, list[str]]:
    """Compile each table \\input into a plain A4 article (2.5 cm margins, booktabs) with pdflatex;
    {file: overfull hbox lines wider than 1 pt} (fails on a LaTeX error)."""
    work.mkdir(parents=True, exist_ok=True)
    found = {}
    for i, tex in enumerate(tex_files):
        doc = work / f"t{i}.tex"
        doc.write_text(ARTICLE % f"\\input{{{tex.resolve()}}}")
        r = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=work,
                           capture_output=True, text=True, timeout=120)
        log = (work / f"t{i}.log").read_text(errors="replace")
        assert r.returncode == 0, (tex, log[-1500:])
        wide = [ln for ln in log.splitlines() if (m := re.search(r"Overfull \\hbox \(([\d.]+)pt too wide", ln))
                and float(m.group(1)) > 1.0]
        if wide:
            found[str(tex)] = wide
    return found


def _tables(tmp: Path) -> list[Path]:
    """The exported tables of a comparison with long labels (the demo's widest), its pairs, a
    snake_case counts table and a float32 share table."""
    payloads = [_payload(tmp, name, stage, shift, seeds=(0, 1)) for name, stage, shift in
                (("zero_shot_tiny-vit", "stage1", 0.0), ("demo_tiny_vit", "stage2", 1.0),
                 ("stage3_demo_tiny_vit [composed]", "stage3", 1.0))]
    for m, title in zip(payloads, ("zero-shot CLIP", "CLIP-ReID", "PromptSG")):
        m["method_title"], m["mode"] = title, "composed" if title == "PromptSG" else ""
    table = results.comparison_table(payloads, "clipfh", n_boot=50)
    pairs = results.paired_table(payloads, "clipfh", n_boot=50)
    folder = tmp / "tables"
    export.save_table(results.display_table(table), folder, "comparison", PROV, caption="c", note="n", data=table)
    export.save_table(results.display_pairs(pairs, table), folder, "pairs", PROV, caption="p", data=pairs)
    counts = pd.DataFrame({"aspect": ["dorsal right"], "train_ids": [143], "queries_per_split": [512],
                           "gallery_all_per_split": [190]})
    export.save_table(display.cells(display.human_columns(counts)), folder, "counts", PROV, caption="k")
    return sorted(folder.glob("*.tex"))


@needs_pdflatex
def test_every_exported_table_fits_an_a4_text_width(tmp_path):
    tex = _tables(tmp_path)
    assert len(tex) >= 4  # the comparison and the pairs were split
    assert not overfull(tex, tmp_path / "latex")


@needs_pdflatex
def test_the_fit_check_sees_a_table_wider_than_the_page(tmp_path):
    wide = pd.DataFrame({f"column {i}": ["12.3 [10.1, 14.2]"] for i in range(12)})
    (tmp_path / "wide.tex").write_text(latex.latex_table(wide, "too wide"))
    assert overfull([tmp_path / "wide.tex"], tmp_path / "latex")


# --------------------------------------------------------------------------- notebooks in git

def _committed_notebooks() -> list[str]:
    out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_every_committed_notebook_is_output_free():
    import nbformat
    paths = _committed_notebooks()
    assert len(paths) >= 8, paths
    for path in paths:  # the staged version (what a commit records), not the working copy
        blob = subprocess.run(["git", "show", f":{path}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        nb = nbformat.reads(blob, as_version=4)
        assert "widgets" not in nb.metadata, path
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, (path, c.source[:60])


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_make_sets_up_the_filter_that_strips_a_saved_notebook(tmp_path):
    """In a fresh repository with our .gitattributes, `make notebook-filter` sets up nbstripout;
    staging a notebook with outputs then records it without them, cell ids kept."""
    import sys

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    shutil.copy(REPO / ".gitattributes", repo / ".gitattributes")
    subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "notebook-filter", f"PY={sys.executable}"],
                   cwd=repo, check=True)
    nb = new_notebook(cells=[new_code_cell("1 + 1", execution_count=3, outputs=[
        new_output("execute_result", {"text/plain": "2"}, execution_count=3)])])
    nb.cells[0].id = "keep-me"
    nbformat.write(nb, repo / "a.ipynb")
    subprocess.run(["git", "add", "a.ipynb"], cwd=repo, check=True)
    staged = nbformat.reads(subprocess.run(["git", "show", ":a.ipynb"], cwd=repo, capture_output=True, text=True,
                                           check=True).stdout, as_version=4)
    assert staged.cells[0].outputs == [] and staged.cells[0].execution_count is None
    assert staged.cells[0].id == "keep-me" and staged.cells[0].source == "1 + 1"
    assert nbformat.read(repo / "a.ipynb", as_version=4).cells[0].outputs  # the working copy keeps its outputs


def test_a_session_uses_the_checkout_it_runs_in_or_clipfh_home(tmp_path, monkeypatch):
    from clipfh_utils.config.files import PACKAGE_CHECKOUT, find_home
    copy = tmp_path / "copy"
    (copy / "configs" / "profiles").mkdir(parents=True)
    (copy / "notebooks").mkdir()
    monkeypatch.delenv("CLIPFH_HOME", raising=False)
    assert find_home(copy / "notebooks") == copy.resolve()       # a notebook opened from a copy
    assert find_home(tmp_path) == PACKAGE_CHECKOUT                # outside any checkout: the installed one
    monkeypatch.setenv("CLIPFH_HOME", str(copy))
    assert find_home(REPO / "notebooks") == copy.resolve()       # CLIPFH_HOME wins
    env = {k: v for k, v in __import__("os").environ.items() if k != "CLIPFH_HOME"}
    got = subprocess.run([__import__("sys").executable, "-c", "from clipfh_utils.config import REPO_ROOT; "
                          "print(REPO_ROOT)"], cwd=copy / "notebooks", capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(REPO)}, check=True).stdout.strip()
    assert got == str(copy.resolve())


# --------------------------------------------------------------------------- no live HTML from free text

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def live_injections(html: str) -> list[str]:
    """Elements or attributes a hostile string would have made live: an <img> that is not an
    embedded figure, a <script> that runs alert(), any on* event attribute."""
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(html, "html.parser")
    found = [str(t)[:80] for t in soup.find_all("img") if not str(t.get("src", "")).startswith("data:image/")]
    found += [str(t)[:80] for t in soup.find_all("script") if "alert(" in (t.string or "")]
    found += [f"{t.name}[{a}]" for t in soup.find_all(True) for a in t.attrs if a.lower().startswith("on")]
    return found


def test_the_injection_check_sees_a_live_element():
    assert len(live_injections(f"<p>{HOSTILE}</p>")) == 3
    assert live_injections("<p>" + display.esc(HOSTILE) + "</p>") == []


HOSTILE_CELLS = [
    "import pandas as pd, matplotlib.pyplot as plt",
    "from clipfh_utils import workbook as wb\nfrom clipfh_utils.report import plotting, results, story",
    f"H = {HOSTILE!r}\nrun = wb.start('demo', RUN_DIR, ['description=' + H], notebook='99_hostile')",
    # a weights path, a prompt template and a HandInfo.csv field: in cells, a caption and a note
    "wb.show_table(pd.DataFrame({'model': ['m ' + H], 'weights': ['/data/' + H + '/w.pt'], "
    "'template': ['A photo of a X hand ' + H], 'skinColor': [H]}), 'settings', caption='Settings ' + H, "
    "note='Data and weights: /data/' + H + '/w.pt')",
    "table = pd.DataFrame({'model': ['a', 'b'], 'label': ['zs ' + H, 'ft ' + H], 'stage': ['stage1', 'stage2'], "
    "'backbone': [H, H], 'protocol': 'clipfh', 'mAP_mean': [20.0, 60.0], 'mAP_ci_lo': [15.0, 50.0], "
    "'mAP_ci_hi': [25.0, 70.0], 'rank1_mean': [10.0, 40.0], 'mAP_seed_sd': [1.0, 2.0], "
    "'mAP_split_sd': [1.0, 3.0], 'real_data': False, 'pretrained': False, 'dataset': H})\n"
    "pairs = pd.DataFrame({'A': ['a'], 'B': ['b'], 'backbone': [H], 'd_mAP': [40.0], 'd_mAP_lo': [30.0], "
    "'d_mAP_hi': [50.0], 'd_rank1': [30.0]})",
    "plotting.comparison_bars(table.assign(mAP_ci_lo=15.0, mAP_ci_hi=65.0), title='mAP ' + H, name='bars');",
    "wb.show_table(results.display_pairs(pairs.assign(d_mAP_lo=1.0, d_mAP_hi=2.0, d_rank1_lo=1.0, d_rank1_hi=2.0,"
    " verdict=H), table), 'pairs', caption=H, note=results.PAIRS_NOTE)",
    "wb.reading(story.read_comparison(table, pairs, protocol_label=H))",
]


@pytest.mark.slow
def test_reports_show_hostile_free_text_as_text(tmp_path):
    """A report rendered (executed by a kernel, converted with the report template) from hostile
    names, paths, a prompt template and a metadata field: every one shows as text, none is live."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from clipfh_utils.pipeline.runner import export_html
    import papermill as pm
    cells = [f"RUN_DIR = {str(tmp_path / 'out')!r}", *HOSTILE_CELLS]
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells],
                                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}}), tmp_path / "in.ipynb")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(REPO), progress_bar=False,
                        kernel_name="python3")
    html = export_html(tmp_path / "out.ipynb", tmp_path / "out.html").read_text()
    assert html.count("onerror=alert(1)") >= 8  # the text is there, escaped, in every place
    assert not live_injections(html), live_injections(html)
    assert "Reading the results" in html and "Settings &lt;img" in html


# --------------------------------------------------------------------------- reading text quotes its table

NUM = r"[-+]?\d+\.\d+"


def _demo_like(tmp: Path):
    payloads = [_payload(tmp, name, stage, shift, seeds=seeds) for name, stage, shift, seeds in
                (("zero_shot_tiny-vit", "stage1", 0.0, (0,)), ("demo_tiny_vit", "stage2", 1.0, (0, 1)),
                 ("stage3_demo_tiny_vit", "stage3", 0.5, (0, 1)))]
    for m, title in zip(payloads, ("zero-shot CLIP", "CLIP-ReID", "PromptSG")):
        m["method_title"] = title
    table = results.comparison_table(payloads, "clipfh", n_boot=200)
    return table, results.paired_table(payloads, "clipfh", n_boot=200)


def _cell_numbers(cell: str) -> list[str]:
    return re.findall(NUM, cell)


def test_each_sentence_quotes_the_cells_of_the_table_shown(tmp_path):
    table, pairs = _demo_like(tmp_path)
    shown = results.display_table(table).set_index("model")
    shown_pairs = results.display_pairs(pairs, table)
    text = story.read_comparison(table, pairs)
    best = shown["mAP (%)"].map(lambda c: float(_cell_numbers(c)[0])).idxmax()
    # best model: its mAP cell (mean and interval) and its Rank-1 mean, as printed in the table
    sentence = next(ln for ln in text.splitlines() if "the best model is" in ln)
    assert f"**{best}**" in sentence
    assert re.findall(NUM, sentence.split(":", 1)[1]) == _cell_numbers(shown.loc[best, "mAP (%)"]) + \
        _cell_numbers(shown.loc[best, "Rank-1 (%)"])[:1]
    # the next best: the difference of the two cells a reader sees
    means = shown["mAP (%)"].map(lambda c: float(_cell_numbers(c)[0])).sort_values(ascending=False)
    second = next(ln for ln in text.splitlines() if "The next best" in ln)
    assert f"**{means.index[1]}**" in second and f"is {means.iloc[0] - means.iloc[1]:.1f} mAP points lower" in second
    # each pair: ΔmAP, its interval and ΔRank-1 from the pairs table; the seed sd from the comparison's cell
    pair_lines = [ln for ln in text.splitlines() if ln.startswith("- **")]
    assert len(pair_lines) == len(shown_pairs) > 0
    for ln, (_, row) in zip(pair_lines, shown_pairs.iterrows()):
        assert ln.startswith(f"- **{row['B']}** vs **{row['A']}**")
        numbers = re.findall(NUM, ln.split("):", 1)[1])
        assert numbers[:4] == [row["ΔmAP (B − A)"], *_cell_numbers(row["ΔmAP 95 % interval"]), row["ΔRank-1 (B − A)"]]
        sds = [shown.loc[m, "mAP sd seeds"] for m in (row["A"], row["B"]) if shown.loc[m, "mAP sd seeds"] != "—"]
        if "seed sd (" in ln or "larger seed sd" in ln:
            assert re.search(r"seed sd \(?(\d+\.\d+)", ln).group(1) == max(sds, key=float)
        verdicts = sum(ln.count(v) for v in ("is better", "not resolved"))
        assert verdicts == 1, ln  # one conclusion per pair


def test_zero_shot_sentence_gives_each_metric_its_own_split_sd(tmp_path):
    table, pairs = _demo_like(tmp_path)
    zs = table[table["stage"] == "stage1"]
    zs = pd.concat([zs, zs.assign(model="other", label="zero-shot CLIP · tiny-rn", backbone="tiny-rn",
                                  mAP_mean=zs["mAP_mean"] - 5)], ignore_index=True)
    shown = results.display_table(zs).set_index("model")
    text = story.read_zero_shot(zs, pairs.iloc[:0])
    line = next(ln for ln in text.splitlines() if "ranks best" in ln)
    row = shown.iloc[0]  # the better of the two (the other is 5 points lower)
    # mAP mean, interval, mAP split sd, Rank-1 mean, Rank-1 split sd (not mAP's: the "1.84" bug)
    assert re.findall(NUM, line) == [*_cell_numbers(row["mAP (%)"]), row["mAP sd splits"],
                                     _cell_numbers(row["Rank-1 (%)"])[0], row["Rank-1 sd splits"]], line
    assert row["mAP sd splits"] != row["Rank-1 sd splits"]


def test_attention_sentences_quote_the_rounded_shares_shown():
    regions = ["background", "fingers", "knuckles", "back of hand / palm", "wrist"]
    area = pd.Series([70.04, 10.0, 5.0, 9.96, 5.0], index=regions)
    raw = np.array([[69.96, 9.26, 5.0, 10.0, 5.65], [64.0, 14.74, 5.0, 10.25, 5.0]], dtype=np.float32)
    table = pd.DataFrame(raw, columns=regions, index=["zs · rollout", "ft · rollout"]).assign(
        model=["zs", "ft"], stage=["stage1", "stage2"], backbone="vit", map="rollout")
    shown = display.cells(table[regions])  # what show_table prints: 1 decimal, float32 noise gone
    assert shown.loc["ft · rollout", "fingers"] == "14.7" and "14.7399" not in shown.to_string()
    text = story.read_attention(table, area, real_data=False)
    move = next(ln for ln in text.splitlines() if "puts" in ln)
    d = float(shown.loc["ft · rollout", "fingers"]) - float(shown.loc["zs · rollout", "fingers"])
    assert f"the fingers ({d:+.1f} points)" in move and d == pytest.approx(5.4)  # 14.7 − 9.3 (raw: +5.5)
    assert f"{shown.loc['ft · rollout', 'background']} % on the background against " \
           f"{shown.loc['zs · rollout', 'background']} % zero-shot" in move


def test_figures_name_models_as_the_tables_do(tmp_path):
    payloads = [_payload(tmp_path, "zero_shot_tiny-vit", "stage1", 0.0), _payload(tmp_path, "demo_tiny_vit", "stage2", 1.0)]
    for m, title in zip(payloads, ("zero-shot CLIP", "CLIP-ReID")):
        m["method_title"] = title
    shown = results.display_table(results.comparison_table(payloads, "clipfh", n_boot=20))
    assert list(shown["model"]) == ["zero-shot CLIP · tiny-vit", "CLIP-ReID · tiny-vit"]
    assert list(results.cmc_curves(payloads)) == list(shown["model"])
    frame = results.per_split_frame(payloads)
    assert list(dict.fromkeys(frame["model"])) == list(shown["model"])
    assert list(dict.fromkeys(frame["experiment"])) == ["zero_shot_tiny-vit", "demo_tiny_vit"]  # internal name kept


def test_the_synthetic_mark_is_inside_every_exported_figure_and_caption(tmp_path):
    from PIL import Image
    marked = export.Provenance(**{**PROV.__dict__, "mark": display.mark(False, True)})
    sizes = {}
    for prov, name in ((PROV, "plain"), (marked, "marked")):
        fig = plotting.cmc_band({"a": np.array([[10.0, 50, 80]])}, max_rank=3)
        export.save_figure(fig, tmp_path, name, prov)
        assert not [t for t in fig.texts if t.get_text().startswith("NOT A")]  # the screen figure unchanged
        plt.close(fig)
        with Image.open(tmp_path / f"{name}.png") as im:
            sizes[name] = im.size
        export.save_table(pd.DataFrame({"a": [1]}), tmp_path, name, prov, caption="Counts")
    svg = (tmp_path / "marked.svg").read_text()
    assert "NOT A HAND-IDENTIFICATION RESULT: synthetic images and random weights" in svg
    assert "NOT A HAND" not in (tmp_path / "plain.svg").read_text()
    assert sizes["marked"][1] > sizes["plain"][1] and sizes["marked"][0] >= sizes["plain"][0]  # a line below
    assert "\\caption{Counts (NOT A HAND-IDENTIFICATION RESULT: synthetic images and random weights)}" in \
        (tmp_path / "marked.tex").read_text()
    assert "\\caption{Counts}" in (tmp_path / "plain.tex").read_text()
