"""The tables users read: one declaration shown as text by `status` and as markdown by
`report`, each accuracy labelled with its split, plurals that agree with their numbers."""
from __future__ import annotations

from search.baselines import compare
from search.finalize import select_winner
from search.progress import plural
from search.tables import BASELINE_COLUMNS, SEARCHED_COLUMNS, final_markdown, final_text


def config(trial: int, rank: int, val: float, tests: list[float]) -> dict:
    return {"source_trial": trial, "search_rank": rank, "search_val_acc": val, "published_recipe": None,
            "params": 123_456, "epochs": 10, "tta_flip": trial == 7, "seeds_done": len(tests),
            "test_acc_mean": sum(tests) / len(tests), "test_acc_std": 0.01, "single_view_accs": tests,
            "single_view_mean": sum(tests) / len(tests), "val_acc_mean": val, "final_rank": rank, "trials": []}


def results(**extra) -> dict:
    configs = [config(7, 1, 0.71, [0.70, 0.72]), config(9, 2, 0.69, [0.66, 0.68])]
    baseline = {**config(0, 0, 0.6, [0.60, 0.62]), "name": "resnet20-he", "narrowed_from": 4_903_242}
    return {"source": "s", "full_train": False, "seeds": 2, "configurations": configs, "baselines": [baseline],
            "baselines_over_budget": ["resnet18-kuangliu"], "winner": 7,
            "comparison": compare(select_winner(configs, False), [baseline]), "rank_correlation": 1.0,
            "runs_done": 6, "runs_planned": 1, "runs_pending": 0, **extra}


def test_every_accuracy_header_names_its_split_and_where_it_comes_from():
    for column in SEARCHED_COLUMNS + BASELINE_COLUMNS:
        if "acc" in column.header:
            assert ("val acc" in column.header or "test acc" in column.header) and \
                   ("search" in column.header or "final" in column.header), column.header


def test_status_and_report_show_the_same_rows():
    r = results()
    text, markdown = final_text(r), "\n".join(final_markdown(r))
    for cells in ("0.7100 ± 0.0100", "0.6700 ± 0.0100", "0.6100 ± 0.0100", "123,456", "narrowed from 4,903,242"):
        assert cells in text and cells in markdown, cells
    for shown in (text, markdown):
        assert "resnet18-kuangliu" in shown and "over the budget even at the narrowest widths" in shown
        assert "val acc, search" in shown and "test acc, final (mean ± std)" in shown
        assert "95% CI [" in shown
    flips = [line for line in markdown.splitlines() if line.startswith("| 1 | 7 |")]
    assert flips and "| yes |" in flips[0]  # trial 7's recipe averages with the mirror image
    assert "of 1 run done" in text and "of 1 run done" in markdown  # singular where the count is one


def test_plural():
    assert [plural(n, "trial") for n in (0, 1, 2, 1500)] == ["0 trials", "1 trial", "2 trials", "1,500 trials"]
