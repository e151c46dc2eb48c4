"""One trial: sample, check the budget, train with pruning, checkpoint, record.

Per epoch (as optuna-examples' pytorch_checkpoint does): report the validation
accuracy, save a resume checkpoint as an artifact (every `--checkpoint-every` epochs) and
record its id, then ask the pruner. A trial retried after its worker died (RetryHeartbeatStaleTrialCallback
copies user attributes and intermediate values) finds that id and resumes at the
epoch after it, as Ray Tune and Determined do.
"""
from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any, Callable

import optuna
import torch

from objectives import ArchConfig, count_macs, count_params
from objectives.checkpoint import model_file
from objectives.recipe import Recipe, sample_recipe
from objectives.space import sample_arch
from objectives.prepare import TrainData
from objectives.train import Trainer
from storage.artifacts import download_torch, remove_artifact, upload_torch
from storage.errors import StoreUnavailable

from storage.retry import StoppedWaiting
from .definition import StudyDefinition
from .progress import describe_arch, describe_recipe
from core.trials import (ARCHITECTURE_ATTR, ARCHITECTURE_TEXT_ATTR, RECIPE_TEXT_ATTR, BEST_EPOCH_ATTR, BUDGET_CONSTRAINT, MACS_CONSTRAINT, CURVE_ATTR, DEVICE_ATTR, FAIL_REASON_ATTR,
                     FIXED_ARCH_ATTR, FIXED_RECIPE_ATTR, IMAGES_PER_SECOND_ATTR, INFEASIBLE_ATTR, MACS_ATTR, MODEL_ARTIFACT_ATTR,
                     PARAMS_ATTR, RECIPE_ATTR, REQUEUED_ATTR, RESUME_CHECKPOINT_ATTR, RESUME_ERROR_ATTR,
                     RESUMED_FROM_EPOCH_ATTR, SECONDS_ATTR, SEED_ATTR, WORKER_ATTR)


class TrialFailed(RuntimeError):
    """The trial ended without a result (NaN, OOM, bad config); the worker goes on."""


class StartOver(TrialFailed):
    """A retry could not resume and holds its predecessor's curve: failed at once and re-queued
    (storage/requeue.py gives the new copy no curve); the worker goes on."""


class WorkerStopping(RuntimeError):
    """The worker was asked to stop mid-trial; the trial is re-queued to resume."""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("epoch", "train_loss", "train_acc", "val_acc", "val_loss", "lr", "epoch_seconds", "images_per_second")
    return [{k: (round(h[k], 5) if isinstance(h[k], float) else h[k]) for k in keep} for h in history]


def checkpoint_due(epoch: int, saved: int, every: int, epochs: int, stopping: bool) -> bool:
    """Whether `epoch` writes a resume checkpoint, the last one being after epoch `saved`: every
    `every` epochs, so a retry redoes at most every-1; also when the worker is stopping, so a
    clean stop loses nothing. The last epoch needs none: model.pt follows."""
    return epoch < epochs and (epoch - saved >= every or stopping)


class Objective:
    def __init__(self, definition: StudyDefinition, data: TrainData, device: torch.device, artifact_store,
                 study_name: str, should_stop: Callable[[], bool] = lambda: False, compile: bool = False,
                 on_epoch: Callable[..., None] | None = None, on_start: Callable[..., None] | None = None,
                 checkpoint_every: int = 1):
        self.definition, self.data, self.device = definition, data, device
        self.checkpoint_every = checkpoint_every  # epochs between resume checkpoints (--checkpoint-every)
        self.store, self.study_name, self.should_stop = artifact_store, study_name, should_stop
        self.compile = compile
        self.on_epoch = on_epoch  # progress: (trial, epoch, epochs, metrics, seconds, epochs this run)
        self.on_start = on_start  # progress: (trial, epochs, user attributes) once it is sampled and fits
        self.current_trial_id: int | None = None  # the trial in flight, for the worker's fault handling

    def __call__(self, trial: optuna.Trial) -> float:
        self.current_trial_id = trial._trial_id
        if hasattr(self.store, "context"):  # a worker's RetryingStore: its messages name the trial
            self.store.context = f"trial {trial.number}"
        try:
            return self._run(trial)
        except StoreUnavailable as e:
            # The store stayed away past --store-wait: the trial is failed with the reason, and
            # the worker re-queues it (resuming from its last checkpoint) before it stops.
            self._mark_requeued(trial, f"{e}; re-queued")
            raise
        except StoppedWaiting:  # asked to stop while the store was away: as any stop mid-trial
            self._mark_requeued(trial, "worker stopped while waiting for the artifact store; re-queued")
            raise WorkerStopping("stopped while waiting for the artifact store") from None

    @staticmethod
    def _mark_requeued(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(FAIL_REASON_ATTR, reason)
        trial.set_user_attr(REQUEUED_ATTR, True)

    def _run(self, trial: optuna.Trial) -> float:
        d = self.definition
        for inherited in (FAIL_REASON_ATTR, REQUEUED_ATTR):  # from the attempt this trial retries
            if trial.user_attrs.get(inherited):
                trial.set_user_attr(inherited, None)
        fixed_arch = trial.user_attrs.get(FIXED_ARCH_ATTR)
        arch = ArchConfig.from_dict(fixed_arch) if fixed_arch else sample_arch(trial, d.space.arch, d.budget,
                                                                                d.max_macs)
        fixed_recipe = trial.user_attrs.get(FIXED_RECIPE_ATTR)
        recipe = Recipe.from_dict(fixed_recipe) if fixed_recipe else sample_recipe(trial, d.space.recipe)
        params, macs = count_params(arch), count_macs(arch)
        trial.set_user_attr(PARAMS_ATTR, params)
        trial.set_user_attr(MACS_ATTR, macs)
        trial.set_constraint(BUDGET_CONSTRAINT, float(params - d.budget))
        if d.max_macs is not None:
            trial.set_constraint(MACS_CONSTRAINT, float(macs - d.max_macs))
        over = ([f"{params:,} trainable parameters > budget {d.budget:,}"] if params > d.budget else []) + \
            ([f"{macs:,} MACs > --max-macs {d.max_macs:,}"] if d.max_macs is not None and macs > d.max_macs else [])
        if over:
            # COMPLETE but infeasible: constrained TPE learns the region from the constraint
            # value, and best_trial ignores it. Nothing was built or trained.
            trial.set_user_attr(INFEASIBLE_ATTR, "over budget: " + " and ".join(over))
            return 0.0
        trial.set_user_attr(ARCHITECTURE_ATTR, arch.to_dict())
        trial.set_user_attr(RECIPE_ATTR, recipe.to_dict())
        trial.set_user_attr(ARCHITECTURE_TEXT_ATTR, describe_arch(arch))
        trial.set_user_attr(RECIPE_TEXT_ATTR, describe_recipe(recipe))
        trial.set_user_attr(DEVICE_ATTR, device_name(self.device))
        trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
        if self.on_start is not None:
            self.on_start(trial.number, recipe.epochs, trial.user_attrs)
        storage = trial.study._storage
        try:
            trainer = Trainer(arch, recipe, self.data, self.device, seed=trial.user_attrs.get(SEED_ATTR, d.seed + trial.number),
                              compile=self.compile)
        except torch.OutOfMemoryError as e:
            return self._fail(trial, f"out of memory building the model: {str(e).splitlines()[0]}")
        resumed_from = self._resume(trial, trainer)
        previous = trial.user_attrs.get(RESUME_CHECKPOINT_ATTR)
        saved = resumed_from  # the epoch a retry would resume after
        started = time.perf_counter()

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> bool:
            nonlocal previous, saved
            if metrics["val_acc"] is not None:  # None: no validation split (final training on all images)
                trial.report(metrics["val_acc"], epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, epoch, recipe.epochs, metrics, time.perf_counter() - started,
                              epoch - resumed_from)
            trial.set_user_attr(CURVE_ATTR, _curve(trainer.history))
            if checkpoint_due(epoch, saved, self.checkpoint_every, recipe.epochs, self.should_stop()):
                saved = epoch
                ckpt_id = upload_torch(self.store, trial, trainer.checkpoint(), f"resume-epoch{epoch}.pt", storage)
                current = {"artifact_id": ckpt_id, "trial_id": trial._trial_id, "epoch": epoch}
                trial.set_user_attr(RESUME_CHECKPOINT_ATTR, current)
                self._remove_own(trial, previous)
                previous = current
            # The last epoch is never pruned: the run is over, and a run that trained all its epochs
            # is COMPLETE whatever the pruner would say (Hyperband's last rung is the last epoch).
            return not fixed_recipe and epoch < recipe.epochs and trial.should_prune()

        result = trainer.run(on_epoch, should_stop=self.should_stop)
        seconds = time.perf_counter() - started
        if result.status == "interrupted":
            self._mark_requeued(trial, f"worker stopped mid-trial ({result.reason}); re-queued")
            raise WorkerStopping(result.reason)
        history = result.history
        trial.set_user_attr(SECONDS_ATTR, round(seconds, 2))
        trained = history[resumed_from:]  # the epochs this process ran (history[i] is epoch i + 1)
        if trained:
            trial.set_user_attr(IMAGES_PER_SECOND_ATTR, round(sum(h["images_per_second"] for h in trained) / len(trained), 1))
        metrics: dict[str, Any] = {}
        if result.best_state is not None:
            metrics = {"val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run}
            if result.status == "completed":
                metrics.update(self.completed_metrics(trial, arch, result))
            model_id = upload_torch(self.store, trial, model_file(
                arch, recipe.to_dict(), result.best_state, self.data.mean, self.data.std, metrics,
                data={"val_size": d.val_size, "seed": d.seed, "train_limit": d.train_limit},
                study=self.study_name, trial=trial.number, **self.model_info(trial)), "model.pt", storage)
            trial.set_user_attr(MODEL_ARTIFACT_ATTR, model_id)
            trial.set_user_attr(BEST_EPOCH_ATTR, result.best_epoch)
        if previous:  # the run is over: its resume checkpoint is no longer needed
            self._remove_own(trial, previous)
            trial.set_user_attr(RESUME_CHECKPOINT_ATTR, None)
        if result.status in ("diverged", "oom"):
            return self._fail(trial, result.reason)
        if result.status == "stopped":
            raise optuna.TrialPruned(f"pruned after epoch {result.epochs_run}")
        return self.trial_value(trial, result, metrics)

    # Hooks for objectives that train fixed configurations (search/finalize/objective.py).
    def completed_metrics(self, trial: optuna.Trial, arch, result) -> dict[str, Any]:
        """Extra metrics of a completed run, stored in its model file."""
        return {}

    def model_info(self, trial: optuna.Trial) -> dict[str, Any]:
        """Extra top-level entries of the trial's model file."""
        return {}

    def trial_value(self, trial: optuna.Trial, result, metrics: dict[str, Any]) -> float:
        """The trial's value, from the run and the metrics its model file records."""
        return result.best_val_acc

    def _resume(self, trial: optuna.Trial, trainer: Trainer) -> int:
        """Load the checkpoint a retried trial inherited; returns the epoch it resumes after."""
        ref = trial.user_attrs.get(RESUME_CHECKPOINT_ATTR)
        if not ref:
            return 0
        try:
            trainer.load_checkpoint(download_torch(self.store, ref["artifact_id"]))
        except (StoreUnavailable, StoppedWaiting):  # the store is away: a fault, not a lost checkpoint
            raise
        except Exception as e:  # a missing or damaged checkpoint: start over rather than fail
            error = f"could not resume from epoch {ref.get('epoch')}: {e}"
            trial.set_user_attr(RESUME_ERROR_ATTR, error)
            # optuna.Trial has no intermediate_values (a FrozenTrial has): its latest record does.
            if trial._get_latest_trial().intermediate_values:
                # This trial holds the curve its checkpoint covered, and Optuna cannot delete an
                # intermediate value: the pruner would judge the new run by the old curve. So this
                # attempt ends before training, and its retry starts over with an empty curve.
                trial.set_user_attr(RESUME_CHECKPOINT_ATTR, None)
                self._mark_requeued(trial, f"{error}; re-queued to start over")
                raise StartOver(error)
            return 0
        trial.set_user_attr(RESUMED_FROM_EPOCH_ATTR, trainer.epoch)
        return trainer.epoch

    def _remove_own(self, trial: optuna.Trial, ref: dict[str, Any] | None) -> None:
        """Delete a superseded resume checkpoint and its artifact rows: this trial's own, or the one
        inherited from the failed attempt it retries (only once this trial has a newer one or has
        finished, so a retry that dies first still leaves it to the next). The rows go from the
        attempt that uploaded it and from the retries that copied them (storage/artifacts.py)."""
        if ref:
            remove_artifact(self.store, trial.study._storage, ref["trial_id"], ref["artifact_id"])

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str) -> float:
        trial.set_user_attr(FAIL_REASON_ATTR, reason)
        raise TrialFailed(reason)
