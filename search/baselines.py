"""Hand designs trained beside a search's winners, and the winner's gain over them.

`search finalize --baselines` trains, in the finalize study and under its schedule, seeds and
data, the designs a user would otherwise train by hand: the seed reports' presets with their
published recipes and ResNet-20 with He et al.'s (objectives/published.py). A preset over the
study's budget is narrowed by the sampler's own rule (objectives/budget.py), and says so.

The comparison is honest by construction: the searched winner is the configuration the final
runs' validation accuracy selects (as `export-best --final` does), never the best on the test
set; the best baseline is the one with the highest test accuracy, which favours the baselines,
so the gain shown is, if anything, an underestimate. Both sides are compared on single-view
test accuracy (each test image once), so flip averaging in a searched recipe is no advantage.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

from objectives import ArchConfig, count_macs, count_params, get_preset
from objectives.budget import fit_to_budget
from objectives.published import BASELINE_RECIPES

ALL = "all"
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Baseline:
    name: str                 # the preset, which is also the published recipe's key
    arch: ArchConfig | None   # None: over the budget even at the narrowest widths
    recipe: dict[str, Any]    # the published recipe (epochs not yet fitted to the final schedule)
    params: int
    published_params: int     # the preset's own size; differs from params when narrowed

    @property
    def narrowed(self) -> bool:
        return self.params != self.published_params


def parse_names(text: str) -> list[str]:
    """`all`, or a comma-separated list of presets that have a published recipe."""
    names = list(BASELINE_RECIPES) if text.strip() == ALL else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINE_RECIPES]
    if unknown or not names:
        raise ValueError(f"--baselines: {', '.join(unknown) or 'nothing given'}: expected all or a comma-separated "
                         f"list of {', '.join(BASELINE_RECIPES)}")
    return list(dict.fromkeys(names))


def plan(names: list[str], widths: tuple[int, ...], budget: int, max_macs: int | None = None) -> list[Baseline]:
    """Each named design within `budget` (and `max_macs`): as published, or narrowed as the
    sampler narrows (every stage width scaled by one factor, rounded down to a width of the
    study's list)."""
    out = []
    for name in names:
        preset = get_preset(name)
        arch = fit_to_budget(preset, widths, budget, max_macs)
        params = count_params(arch)
        fits = params <= budget and (max_macs is None or count_macs(arch) <= max_macs)
        out.append(Baseline(name, arch if fits else None, BASELINE_RECIPES[name].recipe.to_dict(),
                            params, count_params(preset)))
    return out


def welch_interval(a: list[float], b: list[float]) -> dict[str, Any] | None:
    """Mean(a) - mean(b) with Welch's t interval (unequal variances, few runs per side; a
    bootstrap over three seeds would be far too narrow). None with fewer than 2 runs a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats  # imported here: status and the CLI load this module without it
    with warnings.catch_warnings():  # near-equal runs warn of precision loss; the interval is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.ttest_ind(a, b, equal_var=False)
    diff = sum(a) / len(a) - sum(b) / len(b)
    if math.isnan(r.df):  # both sides constant: no spread to build an interval from
        return {"low": diff, "high": diff, "df": None, "p_value": None}
    ci = r.confidence_interval(CONFIDENCE)
    return {"low": float(ci.low), "high": float(ci.high), "df": float(r.df), "p_value": float(r.pvalue)}


def compare(winner: dict[str, Any] | None, baselines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The searched winner against the best finished baseline, on single-view test accuracy.
    `winner` and `baselines` are configuration rows of `final_results`."""
    done = [b for b in baselines if b["seeds_done"]]
    if winner is None or not done:
        return None
    best = max(done, key=lambda b: (b["single_view_mean"], b["name"]))
    w, b = winner["single_view_accs"], best["single_view_accs"]
    return {"winner_trial": winner["source_trial"], "winner_selected_by": winner["selected_by"],
            "best_baseline": best["name"], "metric": "test accuracy, single view (each test image once)",
            "winner_mean": winner["single_view_mean"], "baseline_mean": best["single_view_mean"],
            "winner_seeds": len(w), "baseline_seeds": len(b),
            "difference": winner["single_view_mean"] - best["single_view_mean"],
            "interval": welch_interval(w, b), "confidence": CONFIDENCE,
            "interval_method": "Welch's t (unequal variances) over the seeds of each side"}
