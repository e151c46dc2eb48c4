"""From the best trial to the best model: finalize (a companion study trained by the ordinary
workers, killed and resumed), export-best --final, the Pareto front by size and export within
a smaller budget, and the report's sections. Real processes on a real SQLite study."""
from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import textwrap

import optuna
import pytest
from optuna.trial import TrialState

from search.definition import load_study
from search.finalize import spearman
from search.pareto import pareto_front
from core.trials import BUDGET_CONSTRAINT, FINAL_ATTR, FIXED_RECIPE_ATTR, SEED_ATTR, best_feasible
from tests.helpers import load, one_line_error, search, space_file, worker
from tests.servers import wait_until

# Two stages of one block, three widths, two schedules: trials differ in size and accuracy.
SMALL_SPACE = {
    "arch": {"num_stages": [2, 2], "blocks": [1, 1], "channels": [8, 16, 32], "conv_kernels": [3], "skip_kernels": [1],
             "stem_kernels": [3], "stem_widths": [None], "stem_se_ratios": [0], "se_ratios": [0],
             "activations": ["relu"], "block_dropout": [0.0, 0.0], "head_dropout": [0.0, 0.0]},
    "recipe": {"optimizers": ["sgd_nesterov"], "batch_sizes": [64], "epochs": [2, 2], "crop_paddings": [2],
               "padding_modes": ["reflect"], "schedules": ["onecycle", "step"], "decay_bn_and_bias": [False],
               "cutouts": [0], "mixup_alphas": [0.0], "rotations": [0.0], "ema_decays": [0.0],
               "grad_clip_modes": ["none"], "lr": {"sgd_nesterov": [0.02, 0.2]}, "momentum": [0.9, 0.9],
               "weight_decay": [0.0005, 0.0005], "label_smoothing": [0.0, 0.0]},
}


def test_finalize_trains_k_by_n_runs_resumes_a_killed_one_and_exports(env, tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search("create", "--study", "s", "--storage", url, "--space", space_file(tmp_path, SMALL_SPACE),
           "--val-size", "200", "--pruner", "none", env=env)
    search("worker", "--study", "s", "--storage", url, "--gpus", "none", "--n-trials", "4", env=env)
    trials = load(url, "s").get_trials()

    # The Pareto front and the best model within a smaller budget, from the same study.
    front = json.loads(search("pareto", "--study", "s", "--storage", url, "--json", env=env).stdout)
    assert [r["trial"] for r in front["params"]] == [t.number for t in pareto_front(trials, "params")]
    sizes = sorted({t.user_attrs["params"] for t in trials})
    limit = sizes[0]  # the smallest design's size: larger ones are out
    small = best_feasible(load(url, "s"), max_params=limit)
    search("export-best", "--study", "s", "--storage", url, "--max-params", str(limit), "--out",
           str(tmp_path / "small.pt"), env=env)
    exported = subprocess.run([sys.executable, "-c", f"import torch; d = torch.load({str(tmp_path / 'small.pt')!r}, "
                               f"weights_only=True); print(d['trial'], d['metrics']['params'])"],
                              env=env, capture_output=True, text=True, check=True).stdout.split()
    assert int(exported[0]) == small.number and int(exported[1]) <= limit
    assert "within 1 parameter" in one_line_error(search("export-best", "--study", "s", "--storage", url, "--max-params",
                                                      "1", "--out", str(tmp_path / "x.pt"), env=env, check=False))

    # finalize only enqueues: top 2 configurations x 2 seeds, 4 epochs each (the search ran 2).
    out = search("finalize", "--study", "s", "--storage", url, "--top", "2", "--seeds", "2", "--epochs", "4", env=env).stdout
    assert "enqueued 4 runs" in out
    final, definition = load_study(optuna.storages.RDBStorage(url), "s.final")  # stored and checked like any study
    assert definition.final["source"] == "s" and definition.final["seeds"] == 2 and definition.pruner == "none"
    ranked = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))
    assert definition.final["source_trials"] == [t.number for t in ranked[:2]]
    waiting = final.get_trials(states=(TrialState.WAITING,))
    assert sorted((t.user_attrs[FINAL_ATTR]["source_trial"], t.user_attrs[SEED_ATTR]) for t in waiting) == \
        sorted((t.number, seed) for t in ranked[:2] for seed in (0, 1))
    assert all(t.user_attrs[FIXED_RECIPE_ATTR]["epochs"] == 4 for t in waiting)
    again = search("finalize", "--study", "s", "--storage", url, "--top", "2", "--seeds", "2", "--epochs", "4", env=env)
    assert "enqueued before" in again.stdout and len(load(url, "s.final").trials) == 4
    assert "--final-study" in one_line_error(search("finalize", "--study", "s", "--storage", url, "--top", "3",
                                                    "--epochs", "4", env=env, check=False))

    # A worker is killed mid-run; the next one fails its trial (stale heartbeat) and resumes it.
    hb = ["--heartbeat", "1", "--grace", "2"]
    victim = worker(url, "s.final", env, tmp_path / "victim.log", *hb)

    def running_with_checkpoint():
        for t in load(url, "s.final").get_trials(states=(TrialState.RUNNING,)):
            if (t.user_attrs.get("resume_checkpoint") or {}).get("epoch", 0) >= 1:
                return t
    killed = wait_until(running_with_checkpoint, 240, "a final run with an epoch checkpoint")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    search("worker", "--study", "s.final", "--storage", url, "--gpus", "none", *hb, env=env, timeout=600)

    final = load(url, "s.final")
    done = final.get_trials(states=(TrialState.COMPLETE,))
    assert sorted((t.user_attrs[FINAL_ATTR]["source_trial"], t.user_attrs[SEED_ATTR]) for t in done) == \
        sorted((t.number, seed) for t in ranked[:2] for seed in (0, 1))
    retry = next(t for t in done if t.system_attrs.get("failed_trial") == killed.number)
    assert retry.user_attrs["resumed_from_epoch"] >= 1 and sorted(retry.intermediate_values) == [1, 2, 3, 4]
    assert not final.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert all(t.value == t.user_attrs["test_acc"] for t in done)

    # Results: mean ± std of test accuracy per configuration, rank correlation with the search.
    status = json.loads(search("status", "--study", "s.final", "--storage", url, "--json", env=env).stdout)["final"]
    assert final.user_attrs["final_results"]["runs_done"] == 4  # recorded in the study by the workers
    means = {}
    for c in status["configurations"]:
        tests = [t.user_attrs["test_acc"] for t in done if t.user_attrs[FINAL_ATTR]["source_trial"] == c["source_trial"]]
        assert c["seeds_done"] == 2 and c["test_acc_mean"] == pytest.approx(statistics.fmean(tests))
        assert c["test_acc_std"] == pytest.approx(statistics.stdev(tests))
        means[c["source_trial"]] = c["test_acc_mean"]
    assert status["rank_correlation"] == spearman([t.value for t in ranked[:2]], [means[t.number] for t in ranked[:2]])
    text = search("status", "--study", "s.final", "--storage", url, env=env).stdout
    assert "finalized from s" in text and "±" in text and "rank correlation" in text

    # export-best --final: one self-contained file, saying where it came from; it evaluates.
    path = tmp_path / "final.pt"
    search("export-best", "--study", "s", "--storage", url, "--final", "--out", str(path), env=env)
    check = textwrap.dedent(f"""
        import json, torch
        from objectives.data import load_cifar10
        from objectives.inference import evaluate, load_classifier
        data = torch.load({str(path)!r}, weights_only=True)
        model, info = load_classifier(data)
        acc = evaluate(model, load_cifar10().test, tta=info["recipe"]["tta_flip"]).accuracy
        print(json.dumps({{"acc": acc, "final": info["final"], "study": info["study"], "trial": info["trial"],
                          "test_acc": info["metrics"]["test_acc"]}}))
    """)
    info = json.loads(subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True,
                                     timeout=120, check=True).stdout)
    chosen = final.trials[info["trial"]]
    assert info["study"] == "s.final" and info["acc"] == info["test_acc"] == chosen.user_attrs["test_acc"]
    assert info["final"]["source_study"] == "s" and info["final"]["seed"] == chosen.user_attrs[SEED_ATTR]
    assert info["final"]["source_trial"] == chosen.user_attrs[FINAL_ATTR]["source_trial"]
    assert info["final"]["training"] == {"epochs": 4, "train_images": 800, "full_train": False, "val_images": 200}
    best_config = max(status["configurations"], key=lambda c: c["val_acc_mean"])  # chosen by validation, not test
    assert info["final"]["source_trial"] == best_config["source_trial"]

    # The search's own status and report show its final runs; the report draws the front.
    assert "finalized from s" in search("status", "--study", "s", "--storage", url, env=env).stdout
    search("report", "--study", "s", "--storage", url, "--out", str(tmp_path / "report"), env=env)
    summary = (tmp_path / "report" / "summary.md").read_text()
    # Two configurations can tie (a 200-image test split): then there is no correlation to show, as status says.
    rank_line = "(Spearman): " if status["rank_correlation"] is not None else "Rank correlation: needs at least two"
    assert "## Final runs" in summary and rank_line in summary and "Pareto front" in summary
    assert (tmp_path / "report" / "pareto.png").exists()


def trial(number: int, value: float | None, params: int, macs: int, state=TrialState.COMPLETE, **attrs):
    """As the objective records a sample: its sizes, and the budget constraint (over it: > 0)."""
    t = optuna.trial.create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                  user_attrs={"params": params, "macs": macs, **attrs},
                                  constraints={BUDGET_CONSTRAINT: 1.0 if "infeasible" in attrs else -1.0})
    t.number = number
    return t


def test_pareto_front_ties_and_infeasible():
    trials = [
        trial(0, 0.80, 1_000, 50),
        trial(1, 0.80, 1_000, 40),            # tie with 0 on params: both on the params front
        trial(2, 0.79, 900, 60),              # smaller and less accurate: on the params front
        trial(3, 0.80, 1_500, 10),            # same accuracy as 0, larger: dominated on params
        trial(4, 0.90, 2_000, 100),
        trial(5, 0.95, 3_000, 100),           # same MACs as 4, more accurate: 4 is dominated on MACs
        trial(6, 0.99, 6_000, 5, infeasible="over budget"),  # never trained: on no front
        trial(7, None, 500, 1, state=TrialState.PRUNED),
        trial(8, None, 400, 1, state=TrialState.FAIL),
        trial(9, 0.70, 2_500, 200),           # dominated by 4 on both
    ]
    assert [t.number for t in pareto_front(trials, "params")] == [2, 0, 1, 4, 5]
    assert [t.number for t in pareto_front(trials, "macs")] == [3, 5]  # 1 and 0: as accurate as 3, more MACs
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    assert best_feasible(study).number == study.best_trial.number == 5  # the infeasible 0.99 is never chosen
    assert best_feasible(study, max_params=1_000).number == 0   # 0.80 tie: the earlier trial
    assert best_feasible(study, max_params=2_999).number == 4
    assert best_feasible(study, max_params=10_000).number == 5
    assert best_feasible(study, max_params=10_000, max_macs=45).number == 1
    assert best_feasible(study, max_params=899) is None
    assert best_feasible(optuna.create_study()) is None  # no trial yet
    with pytest.raises(ValueError):
        pareto_front(trials, "flops")


def test_spearman_with_ties():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # average ranks for ties: x ranks 1, 2.5, 2.5, 4; y ranks 1, 2, 3, 4
    assert spearman([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([1.0], [2.0]) is None and spearman([1, 1], [1, 2]) is None


def test_fixed_recipe_and_seed_train_as_given_and_are_never_pruned(cifar_small, tmp_path):
    """The hook `enqueue --with-recipe` and finalize rely on, in-process: a trial carrying a
    recipe trains exactly it (its own epochs, its seed), and the pruner leaves it alone."""
    from objectives import ArchConfig, StageConfig
    from objectives.data import load_cifar10
    from objectives.recipe import Recipe
    from objectives.space import SearchSpace, arch_to_params
    from objectives.prepare import prepare_data
    from objectives.train import train
    from search.definition import StudyDefinition
    from search.objective import Objective
    from storage.artifacts import open_artifact_store
    import torch

    definition = StudyDefinition(space=SearchSpace.from_dict(SMALL_SPACE), val_size=200, pruner="none")
    data = prepare_data(load_cifar10(cifar_small, download_missing=False), 200, 0, train_limit=320)
    arch = ArchConfig(stages=(StageConfig(1, 8), StageConfig(1, 16)), pool_kernel=4)
    recipe = Recipe(epochs=3, batch_size=64, lr=0.05, schedule="constant", crop_padding=0, tta_flip=False)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # prunes all
    params = arch_to_params(arch, definition.space.arch)
    study.enqueue_trial(params, user_attrs={FIXED_RECIPE_ATTR: recipe.to_dict(), SEED_ATTR: 7})
    study.enqueue_trial(params)  # a sampled recipe: pruned after its first epoch
    objective = Objective(definition, data, torch.device("cpu"), open_artifact_store(str(tmp_path)), "s")
    study.optimize(objective, n_trials=2)
    fixed, sampled = study.trials
    assert fixed.state == TrialState.COMPLETE and sorted(fixed.intermediate_values) == [1, 2, 3]
    assert fixed.user_attrs["recipe"] == recipe.to_dict()
    assert fixed.value == train(arch, recipe, data, seed=7).best_val_acc  # the seed it carried
    assert sampled.state == TrialState.PRUNED and sorted(sampled.intermediate_values) == [1]


def test_training_without_validation_keeps_the_last_epoch(cifar_small):
    """--full-train: no validation split; the run keeps its last epoch's weights."""
    from objectives import ArchConfig, StageConfig
    from objectives.data import load_cifar10
    from objectives.recipe import Recipe
    from objectives.prepare import prepare_data
    from objectives.train import Trainer

    data = prepare_data(load_cifar10(cifar_small, download_missing=False), 0, 0, train_limit=256)
    assert len(data.val) == 0 and len(data.train) == 256
    trainer = Trainer(ArchConfig(stages=(StageConfig(1, 8),), pool_kernel=8), Recipe(epochs=2, batch_size=64), data)
    result = trainer.run()
    assert result.status == "completed" and result.best_epoch == 2
    assert [h["val_acc"] for h in result.history] == [None, None]
    final = trainer.eval_model.state_dict()
    assert all((result.best_state[k] == final[k].cpu()).all() for k in final)


def test_final_schedule_defaults_and_published_epochs():
    from objectives.published import PUBLISHED_RECIPES
    from objectives.recipe import Recipe
    from search.finalize import EPOCHS_FACTOR, final_recipe
    from core.trials import PUBLISHED_ATTR

    searched = optuna.trial.create_trial(value=0.5, user_attrs={"recipe": Recipe(
        epochs=20, schedule="step", step_every_epochs=10).to_dict()})
    r = final_recipe(searched, None, search_epochs=20)
    assert r["epochs"] == EPOCHS_FACTOR * 20 and r["step_every_epochs"] == 10 * EPOCHS_FACTOR  # same shape, longer
    assert final_recipe(searched, 30, search_epochs=20)["epochs"] == 30
    published = PUBLISHED_RECIPES["resnet-nightshade"].recipe
    preset = optuna.trial.create_trial(value=0.5, user_attrs={"recipe": published.to_dict(), PUBLISHED_ATTR: "x"})
    assert final_recipe(preset, None, search_epochs=20) == published.to_dict()  # trained as published
    assert final_recipe(preset, 120, search_epochs=20)["step_every_epochs"] == 40


def test_finalize_with_baselines_trains_hand_designs_alike_and_reports_the_gain_with_its_interval(env, tmp_path):
    """Baselines train under the final schedule, seeds and data of the searched configurations,
    narrowed to the budget; status, report and status --json give the winner's gain over the
    best of them with a 95% interval; export-best --final never hands in a baseline."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search("create", "--study", "s", "--storage", url, "--space", space_file(tmp_path, SMALL_SPACE), "--budget",
           "60000", "--val-size", "200", "--pruner", "none", "--train-limit", "400", env=env)
    search("worker", "--study", "s", "--storage", url, "--gpus", "none", "--n-trials", "2", env=env)
    bad = search("finalize", "--study", "s", "--storage", url, "--baselines", "resnet18-kuangliu", env=env, check=False)
    assert "--baselines" in one_line_error(bad) and len(load(url, "s").trials) == 2  # nothing was created
    with pytest.raises(KeyError):
        load(url, "s.final")

    out = search("finalize", "--study", "s", "--storage", url, "--top", "1", "--seeds", "2", "--epochs", "2",
                 "--baselines", "resnet20-he,resnet9-kuangliu", env=env).stdout
    assert "enqueued 6 runs (3 configurations x up to 2 seeds)" in out
    assert "baseline resnet9-kuangliu with its published recipe, 2 epochs (narrowed from 4,903,242" in out
    search("worker", "--study", "s.final", "--storage", url, "--gpus", "none", env=env, timeout=600)

    done = load(url, "s.final").get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 6
    hand = [t for t in done if t.user_attrs[FINAL_ATTR].get("baseline")]
    searched = [t for t in done if not t.user_attrs[FINAL_ATTR].get("baseline")]
    assert sorted(t.user_attrs[FINAL_ATTR]["baseline"] for t in hand) == ["resnet20-he"] * 2 + ["resnet9-kuangliu"] * 2
    # the same final schedule, seeds and data for every run
    assert {t.user_attrs[FIXED_RECIPE_ATTR]["epochs"] for t in done} == {2}
    assert sorted(t.user_attrs[SEED_ATTR] for t in hand) == sorted([t.user_attrs[SEED_ATTR] for t in searched] * 2)
    assert all(sorted(t.intermediate_values) == [1, 2] for t in done)
    he = next(t for t in hand if t.user_attrs[FINAL_ATTR]["baseline"] == "resnet20-he")
    assert he.user_attrs[FIXED_RECIPE_ATTR]["schedule"] == "multistep" and he.user_attrs[FIXED_RECIPE_ATTR]["lr"] == 0.1
    assert all(t.user_attrs["params"] <= 60000 for t in done)  # narrowed to the study's budget
    for t in hand:
        assert t.user_attrs["test_acc_single_view"] == t.user_attrs["test_acc"]  # published recipes test one view

    status = json.loads(search("status", "--study", "s", "--storage", url, "--json", env=env).stdout)["finalized"]
    c = status["comparison"]
    best = max(status["baselines"], key=lambda b: b["single_view_mean"])
    assert c["best_baseline"] == best["name"] and c["winner_trial"] == searched[0].user_attrs[FINAL_ATTR]["source_trial"]
    winner_runs = [t.user_attrs["test_acc_single_view"] for t in searched]
    assert c["difference"] == pytest.approx(statistics.fmean(winner_runs) - best["single_view_mean"])
    assert c["interval"]["low"] <= c["difference"] <= c["interval"]["high"] and "Welch" in c["interval_method"]
    text = search("status", "--study", "s.final", "--storage", url, env=env).stdout
    assert "baselines: hand designs" in text and "narrowed from 4,903,242" in text
    assert f"over the best baseline ({best['name']})" in text and "95% CI [" in text and "(Welch's t)" in text
    search("report", "--study", "s", "--storage", url, "--out", str(tmp_path / "report"), env=env)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "### Baselines" in summary and "95% CI [" in summary and "resnet20-he" in summary

    search("export-best", "--study", "s", "--storage", url, "--final", "--out", str(tmp_path / "final.pt"), env=env)
    exported = subprocess.run([sys.executable, "-c", f"import torch; print(torch.load({str(tmp_path / 'final.pt')!r}, "
                               f"weights_only=True)['final'].get('baseline'))"], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
    assert exported == "None"  # the searched winner, never a yardstick
