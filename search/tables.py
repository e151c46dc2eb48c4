"""Tables shown to users, each declared once and rendered both as terminal text (status)
and as markdown (report's summary.md), so the two never say different things.

A column is a header and how to write one row's cell; every accuracy header names its split
(validation or test) and whether it comes from the search or the final runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .progress import plural

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], str]
    align: str = ">"  # ">" numbers, "<" names


def text_table(columns: list[Column], rows: list[Row], indent: str = "    ") -> list[str]:
    cells = [[c.cell(r) for c in columns] for r in rows]
    widths = [max([len(c.header)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return indent + "  ".join(f"{v:{c.align}{w}}" for v, c, w in zip(values, columns, widths)).rstrip()
    return [line([c.header for c in columns])] + [line(row) for row in cells]


def markdown_table(columns: list[Column], rows: list[Row]) -> list[str]:
    lines = ["| " + " | ".join(c.header for c in columns) + " |",
             "|" + "|".join("---:" if c.align == ">" else "---" for c in columns) + "|"]
    return lines + ["| " + " | ".join(c.cell(r) for c in columns) + " |" for r in rows]


# ---- finalize results (search/finalize/results.py) ------------------------------------------

def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _blank_if_untrained(cell: Callable[[Row], str]) -> Callable[[Row], str]:
    # A baseline over the budget even narrowed has a row (and a note) but no runs.
    return lambda r: "" if r.get("seeds_done") is None else cell(r)


_FINAL_RUN_COLUMNS = [
    Column("epochs", _blank_if_untrained(lambda r: str(r["epochs"]))),
    Column("test acc, final (mean ± std)", _blank_if_untrained(lambda r: f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}")),
    Column("seeds", _blank_if_untrained(lambda r: str(r["seeds_done"]))),
    Column("flip averaged", _blank_if_untrained(lambda r: "yes" if r["tta_flip"] else "no")),
    Column("val acc, final (mean)", _blank_if_untrained(lambda r: _acc(r["val_acc_mean"]))),
]

SEARCHED_COLUMNS = [
    Column("search rank", lambda r: str(r["search_rank"])),
    Column("trial", lambda r: str(r["source_trial"])),
    Column("params", lambda r: f"{r['params'] or 0:,}"),
    Column("val acc, search", lambda r: _acc(r["search_val_acc"])),
    *_FINAL_RUN_COLUMNS,
    Column("final rank (test)", lambda r: str(r["final_rank"])),
]

BASELINE_COLUMNS = [
    Column("design", lambda r: r["name"], "<"),
    Column("params", _blank_if_untrained(lambda r: f"{r['params']:,}")),
    *_FINAL_RUN_COLUMNS,
    Column("note", lambda r: (f"narrowed from {r['narrowed_from']:,} to the budget" if r.get("narrowed_from")
                              else r.get("note", "")), "<"),
]

OVER_BUDGET_NOTE = "over the budget even at the narrowest widths: not trained"


def _data(r: Row) -> str:
    return "all training images, no validation split" if r["full_train"] else "the search's train split, validation kept"


def _baseline_rows(r: Row) -> list[Row]:
    return r["baselines"] + [{"name": name, "note": OVER_BUDGET_NOTE} for name in r.get("baselines_over_budget", [])]


def final_text(r: Row) -> str:
    """The finalize results as `search status` prints them."""
    lines = [f"  finalized from {r['source']} ({_data(r)}): {r['runs_done']} of {plural(r['runs_planned'], 'run')} done, "
             f"{r['runs_pending']} waiting or running",
             "    searched configurations (flip averaged: each test image averaged with its mirror, as the recipe says)"]
    lines += text_table(SEARCHED_COLUMNS, r["configurations"])
    lines.append("    " + _rank_sentence(r))
    if r.get("baselines") or r.get("baselines_over_budget"):
        lines.append("    baselines: hand designs with their published recipes, same epochs, seeds and data")
        lines += text_table(BASELINE_COLUMNS, _baseline_rows(r))
        lines.append(comparison_text(r["comparison"]))
    return "\n".join(lines)


def final_markdown(r: Row) -> list[str]:
    """The finalize results as the report's summary.md shows them."""
    lines = ["", f"## Final runs (from study `{r['source']}`)", "",
             f"{r['runs_done']} of {plural(r['runs_planned'], 'run')} done on {_data(r)}.", ""]
    lines += markdown_table(SEARCHED_COLUMNS, r["configurations"])
    sentence = _rank_sentence(r)
    lines += ["", sentence[0].upper() + sentence[1:] + ".", ""]
    if r["baselines"] or r["baselines_over_budget"]:
        lines += ["### Baselines: hand designs with their published recipes (same epochs, seeds and data)", ""]
        lines += markdown_table(BASELINE_COLUMNS, _baseline_rows(r))
        lines += ["", comparison_text(r["comparison"]).strip() + ".", ""]
    return lines


def comparison_text(c: dict[str, Any] | None) -> str:
    if c is None:
        return "    gain over the baselines: needs a finished searched configuration and a finished baseline"
    iv = c["interval"]
    ci = (f"{c['confidence']:.0%} CI [{iv['low'] * 100:+.2f}, {iv['high'] * 100:+.2f}] (Welch's t)" if iv else
          "no interval: needs at least 2 seeds on each side")
    return (f"    gain of the searched winner (trial {c['winner_trial']}, selected by {c['winner_selected_by']}) over "
            f"the best baseline ({c['best_baseline']}), test accuracy without flip averaging: "
            f"{c['difference'] * 100:+.2f} points ({c['winner_mean']:.4f} vs {c['baseline_mean']:.4f}, "
            f"{c['winner_seeds']} vs {c['baseline_seeds']} seeds), {ci}")


def _rank_sentence(r: Row) -> str:
    rho = r["rank_correlation"]
    if rho is None:
        return "rank correlation: needs at least two finalized configurations with different results"
    return f"rank correlation of the search's validation ranking with the final test ranking (Spearman): {rho:.2f}"
