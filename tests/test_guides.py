"""The README and the docs/ pages: short, tied to the reference, linked, each fact once, measurements dated.

* the README stays a guide (at most 15 KB) and its results block is what the committed reference's tables give;
* the block generator reports what the tables say (a planted change moves it) and refuses a README without markers;
* every relative link in the README and docs/ reaches a file, and every ``module.name`` a page mentions exists;
* no sentence stands in two pages;
* every record in docs/MEASUREMENTS.md has a date, a commit of this history, a machine, a command and figures.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from adadf_core.pipeline.parameters import PipelineError
from adadf_core.pipeline.summary import BEGIN, END, replace_block, results_block, update_readme, verdict
from conftest import missing_attribute

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REFERENCE = ROOT / "results" / "reference" / "synthfer"
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))


def test_readme_is_a_guide_of_at_most_15_kb():
    size = len(README.read_bytes())
    assert size <= 15 * 1024, f"README.md is {size} bytes; move reference material to a docs/ page"
    text = README.read_text()
    for page in ROOT.glob("docs/*.md"):
        assert f"docs/{page.name}" in text, f"the README does not lead to docs/{page.name}"


def test_readme_results_block_is_what_the_reference_tables_give():
    text = README.read_text()
    assert BEGIN in text and END in text
    committed = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n")
    assert committed == results_block(REFERENCE), \
        "README.md's results block differs from the committed reference: run `make reference` (or " \
        "`python -c 'from adadf_core.pipeline.summary import update_readme; update_readme(\"README.md\", " \
        "\"results/reference/synthfer\")'`)"


def test_a_changed_table_changes_the_block_and_its_verdict(tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(REFERENCE / "tables", ref / "tables")
    table = pd.read_csv(ref / "tables" / "03_ablation.csv")
    row = table.index[table["variant"] == "adadf"][0]
    table.loc[row, ["last_acc", "diff_last_acc", "diff_last_acc_lo", "diff_last_acc_hi"]] = [0.9, 0.2, 0.1, 0.3]
    table.to_csv(ref / "tables" / "03_ablation.csv", index=False)
    block = results_block(ref)
    assert block != results_block(REFERENCE)
    assert "| Ada-DF | 90.00 [" in block and "+20.00 [+10.00, +30.00] | holds |" in block

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\nrest\n")
    assert update_readme(readme, ref) is True
    assert readme.read_text().startswith(f"intro\n{BEGIN}\nTest accuracy at the **last epoch**")
    assert readme.read_text().endswith(f"{END}\nrest\n")
    assert update_readme(readme, ref) is False          # a second pass changes nothing


def test_a_readme_without_markers_or_a_reference_without_tables_is_refused(tmp_path):
    with pytest.raises(PipelineError, match="markers are missing"):
        replace_block("no markers here", "block", "README.md")
    with pytest.raises(PipelineError, match="03_ablation.csv"):
        results_block(tmp_path)


@pytest.mark.parametrize("lo, hi, expected", [(0.1, 0.3, "holds"), (-0.3, -0.1, "does not hold"),
                                              (-0.1, 0.1, "not resolved at this power")])
def test_verdict_follows_the_interval(lo, hi, expected):
    assert verdict(lo, hi) == expected


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_reaches_a_file():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: link to {target}")
    assert not broken, "\n".join(broken)


def _modules() -> dict[str, str]:
    modules = {p.stem: ".".join(p.relative_to(ROOT).with_suffix("").parts)
               for p in (ROOT / "adadf_core").rglob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {p.parent.name: ".".join(p.parent.relative_to(ROOT).parts)
                for p in (ROOT / "adadf_core").rglob("__init__.py") if p.parent.name != "adadf_core"}
    return modules


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "METHOD.md"], ids=lambda p: p.name)
def test_every_code_name_a_page_mentions_exists(page):
    """``module.name`` in backticks names a real attribute (module names are unique, tests/test_architecture.py);
    METHOD.md has its own, stricter test in tests/test_docs.py."""
    from adadf_core.config import TrainConfig

    modules, fields = _modules(), {f.name for f in dataclasses.fields(TrainConfig)}
    bad = []
    for ref in sorted(set(re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`", page.read_text()))):
        head, *rest = ref.split(".")
        if head == "adadf_core":
            head, rest = rest[0] if rest else head, rest[1:]
        if head == "cfg" and rest and rest[0] not in fields:
            bad.append(f"`{ref}`: TrainConfig has no field {rest[0]!r}")
        if head not in modules or rest[-1:] in (["py"], ["md"], ["json"], ["csv"]):
            continue
        missing = missing_attribute(modules[head], rest)
        if missing:
            bad.append(f"`{ref}`: {missing}")
    assert not bad, f"{page.name} names things that do not exist:\n" + "\n".join(bad)


def _sentences(text: str) -> set[str]:
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    flat = re.sub(r"\s+", " ", text)
    return {s.strip() for s in re.split(r"(?<=[.:;!?])\s+(?=[A-Z`*(])", flat) if len(s.strip()) >= 80}


def test_no_sentence_stands_in_two_pages():
    seen: dict[str, str] = {}
    twice = []
    for page in PAGES:
        for sentence in _sentences(page.read_text()):
            if sentence in seen:
                twice.append(f"{seen[sentence]} and {page.name}: {sentence[:100]}…")
            seen.setdefault(sentence, page.name)
    assert not twice, "a fact belongs in one page; link to it from the others:\n" + "\n".join(twice)


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_every_measurement_record_is_dated_and_names_commit_machine_command_and_figures():
    text = (ROOT / "docs" / "MEASUREMENTS.md").read_text()
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in text.splitlines()
            if re.match(r"^\| \d", ln)]
    assert len(rows) >= 5, "docs/MEASUREMENTS.md holds no records"
    headers = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in text.splitlines()
               if ln.startswith("| date")]
    assert headers and all(h == ["date", "commit", "machine", "command", "figures"] for h in headers), headers
    shallow = _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    machines = set(re.findall(r"\*\*(\w+)\*\* =", text))
    bad = []
    for row in rows:
        date, commit, machine, command, figures = (row + [""] * 5)[:5]
        if not re.fullmatch(r"20\d\d-\d\d-\d\d", date):
            bad.append(f"{row[:2]}: date {date!r} is not YYYY-MM-DD")
        if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
            bad.append(f"{row[:2]}: commit {commit!r} is not a hash")
        elif not shallow and _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            bad.append(f"{row[:2]}: commit {commit} is not in this repository's history")
        if machine not in machines:
            bad.append(f"{row[:2]}: machine {machine!r} is not described at the top ({sorted(machines)})")
        if not command or not re.search(r"\d", figures):
            bad.append(f"{row[:2]}: a record needs its command and figures")
    assert not bad, "\n".join(bad)


def _tracked_texts():
    listed = subprocess.run(["git", "ls-files", "adadf_core", "notebooks", "docs", "benchmarks", "README.md",
                             "Makefile"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in listed if f.endswith((".py", ".md", ".ipynb")) or f == "Makefile"]


def test_every_full_module_path_in_code_notebooks_and_docs_exists():
    """``adadf_core.x.y`` and ``adadf_core/x/y.py`` in the package, notebooks, docs and benchmarks name a module
    (or a module's attribute) or a file that exists: a moved module leaves no stale pointer behind."""
    bad = []
    for path in _tracked_texts():
        for ref in sorted(set(re.findall(r"adadf_core(?:/[\w.]+)+|adadf_core(?:\.[A-Za-z_]\w*)+", path.read_text()))):
            if "/" in ref:
                if not (ROOT / ref).exists() and not (ROOT / f"{ref}.py").exists():
                    bad.append(f"{path.relative_to(ROOT)}: {ref} (no such file)")
                continue
            parts = ref.split(".")
            at = max(i for i in range(1, len(parts) + 1) if (ROOT.joinpath(*parts[:i]).with_suffix(".py")).exists()
                     or (ROOT.joinpath(*parts[:i]) / "__init__.py").exists())
            missing = missing_attribute(".".join(parts[:at]), parts[at:])
            if missing:
                bad.append(f"{path.relative_to(ROOT)}: {ref} ({missing})")
    assert not bad, "\n".join(bad)


def test_the_results_index_opens_with_a_headline_from_the_tables_and_folds_the_parameters(tmp_path):
    from adadf_core.pipeline.captions import CAPTIONS
    from adadf_core.pipeline.provenance import write_index
    from adadf_core.pipeline.summary import headline
    ref = ROOT / "results" / "reference" / "synthfer"
    shutil.copytree(ref / "tables", tmp_path / "tables")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "03_ablation.png").write_bytes(b"png")
    (tmp_path / "timings.csv").write_text("notebook,seconds,status,finished_at\n"
                                          "a.ipynb,60.0,ok,2026-12-01T10:01:00\nb.ipynb,30.0,ok,2026-12-01T10:01:30\n")
    write_index(tmp_path, {"dataset": "synthfer", "parameters": {"epochs": 3}, "provenance": {"command": "x"}})
    text = (tmp_path / "README.md").read_text()
    ablation = pd.read_csv(ref / "tables" / "03_ablation.csv").set_index("variant").loc["adadf"]
    lines = headline(tmp_path)
    assert 1 <= len(lines) <= 3 and lines[0].startswith(f"- Ada-DF − baseline (Table 2): "
                                                        f"{100 * ablation['diff_last_acc']:+.2f} points")
    assert verdict(ablation["diff_last_acc_lo"], ablation["diff_last_acc_hi"]) in lines[0]
    assert text.index("## Headline") < text.index("## Notebooks") < text.index("## Figures") < text.index("<details>")
    assert "started 2026-12-01T10:00:00, finished 2026-12-01T10:01:30" in text
    assert CAPTIONS["03_ablation"] in text


def test_every_figure_the_reference_holds_has_a_caption():
    from adadf_core.pipeline.captions import CAPTIONS
    figures = {p.stem for p in (ROOT / "results" / "reference" / "synthfer" / "figures").glob("*.png")}
    assert figures <= set(CAPTIONS), sorted(figures - set(CAPTIONS))
