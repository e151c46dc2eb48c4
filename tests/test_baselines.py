"""The baselines a finalize trains and the winner's gain over them: which designs, narrowed how,
which winner and which baseline are compared, and the interval."""
from __future__ import annotations

import statistics

import pytest

from objectives import count_params, get_preset
from objectives.published import BASELINE_RECIPES
from objectives.space import ArchSpace
from search.baselines import compare, parse_names, plan, welch_interval
from search.finalize import select_winner


def test_names_are_all_or_presets_with_a_published_recipe():
    assert parse_names("all") == list(BASELINE_RECIPES)
    assert parse_names("resnet20-he, resnet9-kuangliu,resnet20-he") == ["resnet20-he", "resnet9-kuangliu"]
    for bad in ("resnet18-kuangliu", "resnet20", "", ","):
        with pytest.raises(ValueError, match="--baselines"):
            parse_names(bad)


def test_a_preset_over_the_budget_is_narrowed_by_the_samplers_rule_and_one_within_is_kept():
    widths = ArchSpace().channels
    by_name = {b.name: b for b in plan(["resnet9-kuangliu", "resnet20-he"], widths, 300_000)}
    kuangliu, he = by_name["resnet9-kuangliu"], by_name["resnet20-he"]
    assert he.arch == get_preset("resnet20-he") and not he.narrowed  # 272,474 fits 300k: as published
    assert kuangliu.narrowed and kuangliu.published_params == 4_903_242
    assert kuangliu.params == count_params(kuangliu.arch) <= 300_000
    # the shape survives: same stages and blocks, every width from the list and at most the original
    original = get_preset("resnet9-kuangliu")
    assert [s.blocks for s in kuangliu.arch.stages] == [s.blocks for s in original.stages]
    assert all(s.channels in widths and s.channels <= o.channels for s, o in zip(kuangliu.arch.stages, original.stages))
    assert kuangliu.recipe == BASELINE_RECIPES["resnet9-kuangliu"].recipe.to_dict()
    (hopeless,) = plan(["se-resnet-rawat"], (16,), 10_000)  # over even at the narrowest width
    assert hopeless.arch is None


def test_welch_interval_brackets_the_difference_and_needs_two_runs_a_side():
    a, b = [0.61, 0.63, 0.62], [0.55, 0.58, 0.54]
    iv = welch_interval(a, b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    assert iv["low"] < diff < iv["high"] and iv["high"] - diff == pytest.approx(diff - iv["low"])
    wider = welch_interval(a, [0.45, 0.58, 0.64])  # the same means' difference, a noisier baseline
    assert wider["high"] - wider["low"] > iv["high"] - iv["low"]
    assert welch_interval([0.6], b) is None and welch_interval(a, [0.5]) is None
    same = welch_interval([0.5, 0.5], [0.4, 0.4])  # no spread at all: the difference, exactly
    assert same["low"] == same["high"] == pytest.approx(0.1)


def row(trial, val, singles, rank=1, tests=None):
    return {"source_trial": trial, "search_rank": rank, "val_acc_mean": val, "single_view_accs": singles,
            "single_view_mean": statistics.fmean(singles), "test_acc_mean": statistics.fmean(tests or singles),
            "seeds_done": len(singles)}


def test_the_winner_is_chosen_by_validation_and_the_best_baseline_by_test():
    by_val = row(3, 0.70, [0.60, 0.61], rank=2)
    by_test = row(5, 0.65, [0.66, 0.67], rank=1)  # better on test, worse on validation: not the winner
    winner = select_winner([by_val, by_test], full_train=False)
    assert winner["source_trial"] == 3 and "validation" in winner["selected_by"]
    assert select_winner([by_val, by_test], full_train=True)["source_trial"] == 5  # no validation: the search's rank
    baselines = [dict(row(None, 0.5, [0.50, 0.52]), name="a"), dict(row(None, 0.9, [0.55, 0.57]), name="b")]
    c = compare(winner, baselines)
    assert c["best_baseline"] == "b" and c["difference"] == pytest.approx(0.605 - 0.56)
    assert c["interval"]["low"] < c["difference"] < c["interval"]["high"]
    assert compare(winner, []) is None and compare(None, baselines) is None


def test_the_comparison_is_on_single_view_accuracy_whatever_the_recipe_evaluates():
    flipped = row(1, 0.7, [0.60, 0.62], tests=[0.65, 0.67])  # flip averaging lifted its test accuracy
    baseline = dict(row(None, 0.6, [0.58, 0.60]), name="resnet20-he")
    c = compare(select_winner([flipped], False), [baseline])
    assert c["difference"] == pytest.approx(0.61 - 0.59) and "single view" in c["metric"]
