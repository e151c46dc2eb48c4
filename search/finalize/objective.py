"""The worker's objective in a finalize study: train the fixed configuration an enqueued
final run carries, then test it; the test accuracy is the trial's value."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from core.trials import FINAL_ATTR, FIXED_RECIPE_ATTR, SEED_ATTR, SINGLE_VIEW_TEST_ACC_ATTR, TEST_ACC_ATTR, UNUSED_ATTR, VAL_ACC_ATTR
from objectives.data import Split
from objectives.inference import MEMORY_FORMAT, Classifier, evaluate
from objectives.model import build
from objectives.recipe import Recipe

from ..objective import Objective
from .results import RESULTS_ATTR, final_results


class FinalObjective(Objective):
    """Trains the fixed configuration an enqueued final trial carries, then tests it.

    The run's kept weights are its best validation epoch, or its last epoch when it trains
    on all 50,000 images (no validation split); the test set only measures them."""

    def __init__(self, *args, test: Split, **kwargs):
        super().__init__(*args, **kwargs)
        self.test = Split(test.images.to(self.device), test.labels.to(self.device))

    def __call__(self, trial: optuna.Trial) -> float:
        if FINAL_ATTR not in trial.user_attrs:
            # Optuna makes a new trial when the queue is empty: nothing is left to finalize.
            trial.set_user_attr(UNUSED_ATTR, "no configuration left to finalize when this worker asked")
            trial.study.stop()
            raise optuna.TrialPruned("nothing left to finalize")
        value = super().__call__(trial)
        trial.study.set_user_attr(RESULTS_ATTR, final_results(trial.study))
        if not trial.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial.study.stop()  # the queue is done: do not let Optuna sample a new trial
        return value

    def completed_metrics(self, trial: optuna.Trial, arch, result) -> dict[str, Any]:
        recipe = Recipe.from_dict(trial.user_attrs[FIXED_RECIPE_ATTR])
        model = build(arch)
        model.load_state_dict(result.best_state)
        classifier = Classifier(model, self.data.mean, self.data.std).to(self.device, memory_format=MEMORY_FORMAT)
        ev = evaluate(classifier, self.test, self.device,
                      tta=recipe.tta_flip)
        val_acc = result.best_val_acc if len(self.data.val) else None
        trial.set_user_attr(SINGLE_VIEW_TEST_ACC_ATTR, ev.single_view_accuracy)
        trial.set_user_attr(TEST_ACC_ATTR, ev.accuracy)
        trial.set_user_attr(VAL_ACC_ATTR, val_acc)
        return {"test_acc": ev.accuracy, "test_acc_single_view": ev.single_view_accuracy, "test_tta_flip": recipe.tta_flip,
                "test_images": len(self.test), "val_acc": val_acc}

    def model_info(self, trial: optuna.Trial) -> dict[str, Any]:
        origin = trial.user_attrs[FINAL_ATTR]
        recipe = trial.user_attrs[FIXED_RECIPE_ATTR]
        return {"final": {**origin, "seed": trial.user_attrs[SEED_ATTR],
                          "training": {"epochs": recipe["epochs"], "train_images": len(self.data.train),
                                       "full_train": not len(self.data.val), "val_images": len(self.data.val)}}}

    def trial_value(self, trial: optuna.Trial, result, metrics: dict[str, Any]) -> float:
        if "test_acc" not in metrics:  # completed_metrics ran: a run that completes is tested
            raise RuntimeError("a completed final run has no test accuracy")
        return metrics["test_acc"]
