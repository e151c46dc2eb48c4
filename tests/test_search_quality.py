"""benchmarks/search_quality.py runs the product's protocol end to end (here at its smoke scale,
on the small CIFAR-10): both search arms, finalize with the baselines, the final runs, and a
JSON that holds, per arm, what the README's table is made of. Its figures are not judged here."""
from __future__ import annotations

import json
import subprocess
import sys

from objectives.published import BASELINE_RECIPES
from tests.helpers import REPO


def test_search_quality_smoke_writes_every_arm_and_baseline(cifar_small, tmp_path):
    out = tmp_path / "sq.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "search_quality.py"), "--scale", "smoke",
                           "--data-dir", str(cifar_small), "--workdir", str(tmp_path / "work"), "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert set(r["arms"]) == {"default", "random"}
    assert r["arms"]["default"]["pruner"] == "hyperband" and r["arms"]["random"]["pruner"] == "none"
    for arm in r["arms"].values():
        assert arm["search_seconds"] > 0 and "load_1min" in arm and arm["trials_trained"] >= 1
        assert 1 <= len(arm["configurations"]) <= r["protocol"]["top"]
        for c in arm["configurations"]:
            assert c["seeds_done"] == r["protocol"]["seeds"] and c["epochs"] == r["protocol"]["final_epochs"]
            assert "architecture" in c and "recipe" in c
        winner = next(c for c in arm["configurations"] if c["source_trial"] == arm["winner_trial"])
        assert arm["winner_test_acc_mean"] == winner["single_view_mean"]
        cmp = arm["vs_best_baseline"]
        assert cmp["baseline_mean"] == max(b["single_view_mean"] for b in r["baselines"])
        assert cmp["interval"]["low"] <= cmp["difference"] <= cmp["interval"]["high"]
        assert "rank_correlation_search_vs_final" in arm
    trained = {b["name"] for b in r["baselines"]} | set(r["baselines_over_budget"])
    assert trained == set(BASELINE_RECIPES)  # every hand design, trained or said to be over the budget
    assert all(b["seeds_done"] == r["protocol"]["seeds"] for b in r["baselines"])
    assert "load_1min" in r["load_at_start"] and r["total_seconds"] > 0
