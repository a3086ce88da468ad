"""The README's results block, written from the committed reference's tables, never typed in.

``results_block`` reads ``tables/03_ablation.csv``, ``comparison.csv``, ``07_noise.csv`` and ``06_claims.csv`` of a
reference folder and returns Markdown: the last-epoch accuracy of every row with its 95 % interval, each paired
difference to the baseline with its interval and the verdict that interval allows. ``update_readme`` rewrites the
block between ``BEGIN`` and ``END`` in the README; ``make reference`` calls it, and a test compares the committed
README with what the committed tables give.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from adadf_core.pipeline.parameters import PipelineError
from adadf_core.utils.fileio import write_text

BEGIN = "<!-- results: written by `make reference` from results/reference/synthfer/tables; do not edit by hand -->"
END = "<!-- end of results -->"

NAMES = {"baseline": "baseline", "cd_only": "cd_only", "ld_only": "ld_only", "adadf": "Ada-DF", "scn": "SCN",
         "slm_aea": "SLM-AEA", "rul": "RUL", "eac": "EAC"}


def verdict(lo: float, hi: float) -> str:
    """What a paired 95 % interval allows one to say about "the method is better than the baseline"."""
    if lo > 0:
        return "holds"
    if hi < 0:
        return "does not hold"
    return "not resolved at this power"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _interval(row: pd.Series, prefix: str, signed: bool = False) -> str:
    lo, hi = row[f"{prefix}_lo"], row[f"{prefix}_hi"]
    fmt = (lambda v: f"{100 * v:+.2f}") if signed else _pct
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _card_rows(df: pd.DataFrame, key: str) -> list[str]:
    """``| name | last [lo, hi] | Δ last [lo, hi] | verdict |`` for each row of a protocol-card table."""
    lines = []
    for _, row in df.iterrows():
        name = NAMES.get(str(row[key]), str(row[key]))
        acc = f"{_pct(row['last_acc'])} {_interval(row, 'last_acc')}"
        if int(row.get("pairs", 0) or 0) > 0:
            diff = f"{100 * row['diff_last_acc']:+.2f} {_interval(row, 'diff_last_acc', signed=True)}"
            lines.append(f"| {name} | {acc} | {diff} | {verdict(row['diff_last_acc_lo'], row['diff_last_acc_hi'])} |")
        else:
            lines.append(f"| {name} | {acc} | – | – |")
    return lines


def _seeds(df: pd.DataFrame) -> str:
    seeds = sorted({str(s) for s in df["seeds"].astype(str)})
    return ", ".join(seeds[0].split(",")) if len(seeds) == 1 else " / ".join(seeds)


def results_block(reference: str | Path) -> str:
    """The Markdown between the README's markers, from the tables under ``reference/tables``."""
    tables = Path(reference) / "tables"
    try:
        ablation = pd.read_csv(tables / "03_ablation.csv")
        comparison = pd.read_csv(tables / "comparison.csv")
        noise = pd.read_csv(tables / "07_noise.csv")
        claims = pd.read_csv(tables / "06_claims.csv")
    except FileNotFoundError as exc:
        raise PipelineError(f"{exc.filename}: the reference lacks a table the README's results are written from") from exc
    head = "| | last epoch, % [95 % CI] | Δ vs baseline [95 % CI] | better than the baseline? |\n|---|---|---|---|"
    out = [f"Test accuracy at the **last epoch**, mean over seeds {_seeds(ablation)} with the 95 % interval of the "
           "mean; Δ is the paired difference to the baseline over the same seeds (docs/RESULTS.md says how to read "
           "them; best-epoch and mean-of-last-k figures are in the reference's tables).", "",
           "Ablation (paper Table 2):", "", head, *_card_rows(ablation, "variant"), "",
           "Comparison on the same data, backbone and budget:", "", head,
           *_card_rows(comparison[comparison["method"] != "baseline"], "method"), "",
           "Symmetric label noise (paper Table 4), Ada-DF − baseline at the last epoch:", "",
           "| noise | baseline, % | Ada-DF, % | Δ [95 % CI] | better than the baseline? |", "|---|---|---|---|---|"]
    for rate, group in noise.groupby("noise", sort=True):
        rows = {str(r["method"]): r for _, r in group.iterrows()}
        if "adadf" not in rows or "baseline" not in rows:
            continue
        a, b = rows["adadf"], rows["baseline"]
        out.append(f"| {100 * float(rate):.0f} % | {_pct(b['last_acc'])} {_interval(b, 'last_acc')} | "
                   f"{_pct(a['last_acc'])} {_interval(a, 'last_acc')} | "
                   f"{100 * a['diff_last_acc']:+.2f} {_interval(a, 'diff_last_acc', signed=True)} | "
                   f"{verdict(a['diff_last_acc_lo'], a['diff_last_acc_hi'])} |")
    out += ["", "SynthFER's ground truth (the annotators' votes):", "", "| claim | measured | verdict |",
            "|---|---|---|"]
    out += [f"| {r['claim']} | {r['measured']} | {r['verdict']} |" for _, r in claims.iterrows()]
    out += _regime_lines(tables, noise)
    return "\n".join(out)


def _regime_lines(tables: Path, noise: pd.DataFrame) -> list[str]:
    """What the study's regime is, from its tables (each line only when its table is there): SynthFER's votes
    against FERPlus's, the fallback rows of D at the last epoch, and memorisation under label noise."""
    out = ["", "The regime these numbers come from:", ""]
    calibration = tables / "synthfer_calibration.csv"
    if calibration.is_file():
        cal = pd.read_csv(calibration)
        within = cal["structured_within"].astype(str).str.lower() == "true"
        out.append(f"- SynthFER's votes (structured ambiguity) match FERPlus's crowd votes on {int(within.sum())} of "
                   f"{len(cal)} statistics within their tolerances (`tables/synthfer_calibration.csv`).")
    fallback = tables / "05_fallback_rows_by_seed.csv"
    if fallback.is_file():
        counts = pd.read_csv(fallback)
        seeds = [c for c in counts.columns if c.startswith("seed ")]
        last = counts[seeds].iloc[-1].astype(int).tolist()
        out.append(f"- Ada-DF's class-distribution miner: after the last epoch, {min(last)} to {max(last)} of the 7 "
                   f"rows of D are the threshold fallback over {len(seeds)} seeds (`tables/05_fallback_rows_by_seed.csv`).")
    if "train_acc" in noise.columns:
        base = noise[(noise["method"] == "baseline") & (pd.to_numeric(noise["noise"], errors="coerce") > 0)]
        parts = [f"at {100 * float(r['noise']):.0f} % noise {_pct(r['train_acc'])} % (clean share "
                 f"{_pct(r['clean_share'])} %)" for _, r in base.iterrows()]
        if parts:
            out.append("- Memorisation: the baseline's last-epoch accuracy on its own (noisy) training labels is "
                       + "; ".join(parts) + ". Above the clean share it is fitting flipped labels "
                       "(`tables/07_noise.csv`).")
    return out if len(out) > 3 else []


def replace_block(text: str, block: str, where: str = "README.md") -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise PipelineError(f"{where}: the results markers are missing (expected a line {BEGIN!r} and later {END!r})")
    return text[:start + len(BEGIN)] + "\n" + block + "\n" + text[end:]


def update_readme(readme: str | Path, reference: str | Path) -> bool:
    """Rewrite the README's results block from ``reference``; True when the file changed."""
    readme = Path(readme)
    old = readme.read_text()
    new = replace_block(old, results_block(reference), str(readme))
    if new != old:
        write_text(readme, new)
    return new != old


def headline(folder: str | Path) -> list[str]:
    """Up to three lines for a results index: Ada-DF − baseline at the last epoch in the ablation, in the
    comparison's strongest other method, and at the highest noise rate, each with its 95 % interval, seeds and
    verdict (from the folder's tables; a table that is not there gives no line)."""
    tables, lines = Path(folder) / "tables", []

    def line(what: str, row: pd.Series) -> str:
        return (f"- {what}: {100 * row['diff_last_acc']:+.2f} points {_interval(row, 'diff_last_acc', signed=True)} "
                f"at the last epoch, seeds {row['seeds']}: **{verdict(row['diff_last_acc_lo'], row['diff_last_acc_hi'])}**")

    if (tables / "03_ablation.csv").is_file():
        ablation = pd.read_csv(tables / "03_ablation.csv").set_index("variant")
        if "adadf" in ablation.index and int(ablation.loc["adadf", "pairs"] or 0):
            lines.append(line("Ada-DF − baseline (Table 2)", ablation.loc["adadf"]))
    if (tables / "comparison.csv").is_file():
        comp = pd.read_csv(tables / "comparison.csv")
        others = comp[~comp["method"].isin(["baseline", "adadf"]) & (comp["pairs"].fillna(0) > 0)]
        if len(others):
            best = others.sort_values("last_acc").iloc[-1]
            lines.append(line(f"{NAMES.get(best['method'], best['method'])} − baseline (the best other method)", best))
    if (tables / "07_noise.csv").is_file():
        noise = pd.read_csv(tables / "07_noise.csv")
        noise["rate"] = pd.to_numeric(noise["noise"], errors="coerce")
        top = noise[(noise["method"] == "adadf") & (noise["pairs"].fillna(0) > 0)].sort_values("rate")
        if len(top) and top["rate"].iloc[-1] > 0:
            lines.append(line(f"Ada-DF − baseline at {top['rate'].iloc[-1]:.0%} label noise (Table 4)", top.iloc[-1]))
    return lines
