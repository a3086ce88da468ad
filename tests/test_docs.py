"""docs/METHOD.md is what the project cites.

* every section citation (the section sign followed by N or N.M) in the code, notebooks, docs, tests,
  benchmarks and tools names a section that has a heading in docs/METHOD.md;
* nothing cites the method documents outside the repository any more;
* METHOD.md keeps its fixed numbering, its §9 lists every switch with both profiles' values, and every
  ``module.name`` / ``cfg.field`` it mentions exists.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from conftest import missing_attribute

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "METHOD.md"
THIS = Path(__file__).resolve()

SIGN = "\u00a7"                                                   # the section sign
HEADING = re.compile(rf"^#{{2,3}} {SIGN}(\d+(?:\.\d+)?)(?![\d.])", re.M)
CITATION = re.compile(rf"{SIGN}\s?(\d+(?:\.\d+)?)")
# ways of citing the method documents that live outside the repository
OUTSIDE = re.compile(r"spec\s+sections?\b|spec\s*" + SIGN + r"|\bspec\s+\d|\bspec's\b|adadf_method\.md"
                     r"|peer_methods\.md|shared/docs", re.I)
# the fixed numbering other files rely on
REQUIRED = ([str(n) for n in range(1, 15)] + [f"2.{m}" for m in range(1, 10)] + ["8.1"]
            + [f"11.{m}" for m in range(1, 11)] + [f"12.{m}" for m in range(1, 8)])
# switches §9 must show besides config.PROFILE_SWITCHES
EXTRA_SWITCHES = ("recipe", "backbone", "scn_relabel_scope", "slm_eval_mean", "slm_schedule", "amp",
                  "channels_last")


def scanned_files() -> list[Path]:
    files = sorted((ROOT / "adadf_core").rglob("*.py"))
    for folder, pattern in (("notebooks", "*.ipynb"), ("docs", "*.md"), ("benchmarks", "*.py"),
                            ("tests", "*.py"), ("tools", "*.py")):
        files += sorted((ROOT / folder).glob(pattern))
    if (ROOT / "README.md").is_file():
        files.append(ROOT / "README.md")
    return files


def text_lines(path: Path):
    """(where, line) pairs: "line N" for text files, "cell K line N" for notebook cell sources."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        for k, cell in enumerate(nb.get("cells", []), 1):
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            for n, line in enumerate(source.splitlines(), 1):
                yield f"cell {k} line {n}", line
    else:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield f"line {n}", line


def headings() -> set[str]:
    return set(HEADING.findall(METHOD.read_text(encoding="utf-8")))


def section(number: str) -> str:
    """The text of METHOD.md's section ``number`` (a top-level one), up to the next top-level heading."""
    text = METHOD.read_text(encoding="utf-8")
    start = re.search(rf"^## {SIGN}{re.escape(number)}\b.*$", text, re.M)
    assert start, f"docs/METHOD.md has no heading for section {number}"
    end = re.search(rf"^## {SIGN}", text[start.end():], re.M)
    return text[start.end(): start.end() + end.start() if end else len(text)]


def test_every_section_citation_has_a_heading():
    known = headings()
    missing, count = [], 0
    for path in scanned_files():
        for where, line in text_lines(path):
            for number in CITATION.findall(line):
                count += 1
                if number not in known:
                    missing.append(f"{path.relative_to(ROOT)}:{where}: cites {SIGN}{number}, which has no "
                                   f"heading in docs/METHOD.md")
    assert count > 0, "found no section citations at all: is the scan looking in the right places?"
    assert not missing, "\n".join(missing)


def test_nothing_cites_the_outside_spec():
    found = []
    for path in scanned_files():
        if path.resolve() == THIS:
            continue
        for where, line in text_lines(path):
            m = OUTSIDE.search(line)
            if m:
                found.append(f"{path.relative_to(ROOT)}:{where}: cites {m.group(0)!r} outside the repository; "
                             f"cite docs/METHOD.md {SIGN}N instead")
    assert not found, "\n".join(found)


def test_method_md_keeps_its_numbering():
    known = headings()
    absent = [f"{SIGN}{n}" for n in REQUIRED if n not in known]
    assert not absent, f"docs/METHOD.md lacks the headings {', '.join(absent)}"
    text = METHOD.read_text(encoding="utf-8")
    order = [h for h in HEADING.findall(text)]
    assert len(order) == len(set(order)), "docs/METHOD.md has a section number twice"
    keys = [tuple(int(x) for x in h.split(".")) for h in order]
    assert keys == sorted(keys), f"docs/METHOD.md's sections are out of order: {order}"


def _table_rows(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and {first cell without backticks: cells} of the first Markdown table in ``text``."""
    rows = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]
    header, body = cells[0], [c for c in cells[2:]]
    return header, {c[0].strip("`"): c for c in body}


def test_section_9_lists_every_switch_with_both_profiles_values():
    from adadf_core.config import PROFILE_SWITCHES, PROFILES, TrainConfig, resolve_config

    header, rows = _table_rows(section("9"))
    columns = {p: next((i for i, h in enumerate(header) if h.strip("`") == p), None) for p in PROFILES}
    assert None not in columns.values(), f"§9's table needs one column per profile; header: {header}"
    names = list(PROFILE_SWITCHES["official"]) + [n for n in EXTRA_SWITCHES if n not in PROFILE_SWITCHES["official"]]
    wrong = []
    for profile in PROFILES:
        resolved = dataclasses.asdict(resolve_config(TrainConfig(profile=profile)))
        for name in names:
            if name not in rows:
                wrong.append(f"{name}: no row in §9")
                continue
            want = f"`{resolved[name]}`"
            cell = rows[name][columns[profile]]
            if want not in cell:
                wrong.append(f"{name}: the {profile} column says {cell!r}; the config resolves to {want}")
    assert not wrong, "docs/METHOD.md §9 is out of date:\n" + "\n".join(sorted(set(wrong)))


def test_every_name_method_md_mentions_exists():
    from adadf_core.config import TrainConfig

    text = METHOD.read_text(encoding="utf-8")
    # module names are unique in the package (tests/test_architecture.py), so a stem names one module
    modules = {p.stem: ".".join(p.relative_to(ROOT).with_suffix("").parts)
               for p in (ROOT / "adadf_core").rglob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {p.parent.name: ".".join(p.parent.relative_to(ROOT).parts)          # packages: `align.align_face`
                for p in (ROOT / "adadf_core").rglob("__init__.py") if p.parent.name != "adadf_core"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad, checked = [], 0
    for ref in sorted(set(re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`", text))):
        head, *rest = ref.split(".")
        if head == "cfg":
            checked += 1
            if len(rest) != 1 or rest[0] not in fields:
                bad.append(f"`{ref}`: TrainConfig has no field {'.'.join(rest)!r}")
        elif head in modules and rest[-1] not in ("py", "md"):
            checked += 1
            missing = missing_attribute(modules[head], rest)
            if missing:
                bad.append(f"`{ref}`: {missing}")
    assert checked > 20, f"only {checked} code references found in docs/METHOD.md"
    assert not bad, "docs/METHOD.md names things that do not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize("line, expected", [
    ("see docs/METHOD.md \u00a72.4-\u00a72.6 and (\u00a77).", ["2.4", "2.6", "7"]),
    ("\u00a711.10: decisions; \u00a74. Next", ["11.10", "4"]),
])
def test_citation_pattern(line, expected):
    assert CITATION.findall(line) == expected
