"""The trainer: learning on real CIFAR-10, recipes, schedules, faults, reproducibility, resume."""
from __future__ import annotations

import dataclasses
import io
import math
import re

import optuna
import pytest
import torch

from objectives import ArchConfig, StageConfig, build
from objectives.data import load_cifar10
from objectives.recipe import OPTIMIZERS, SCHEDULES, Recipe, RecipeSpace, sample_recipe
from objectives.schedule import lr_factor
from objectives.inference import Classifier, evaluate
from objectives.prepare import prepare_data
from objectives.train import Trainer, train

TINY = ArchConfig(stages=(StageConfig(1, 32), StageConfig(1, 64)), pool_kernel=4)   # 87,466 parameters
QUICK = Recipe(epochs=1, batch_size=64, crop_padding=2, cutout=4, tta_flip=False)


@pytest.fixture(scope="module")
def data(cifar_small):
    return prepare_data(load_cifar10(cifar_small, download_missing=False), val_size=200, seed=0, train_limit=512)


@pytest.fixture(scope="module")
def mini(data):
    """128 training images: for tests about mechanics, not accuracy."""
    return dataclasses.replace(data, train=data.train.subset(torch.arange(128)), val=data.val.subset(torch.arange(64)))


def test_learns_real_cifar10_subset(data):
    # Measured on the 2-core CI machine: ~0.97 train accuracy, ~0.39 validation (chance 0.10), ~15 s.
    recipe = Recipe(epochs=15, batch_size=32, lr=0.05, weight_decay=0.0, crop_padding=0, flip=False,
                    label_smoothing=0.0, tta_flip=False)
    result = train(TINY, recipe, data, seed=0)
    assert result.status == "completed" and result.epochs_run == 15
    assert result.final["train_acc"] > 0.85
    assert result.best_val_acc > 0.25
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 2


def test_on_epoch_gets_metrics_and_can_stop(mini):
    seen = []
    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics))
        return epoch == 2
    result = train(TINY, dataclasses.replace(QUICK, epochs=5), mini, on_epoch=on_epoch)
    assert result.status == "stopped" and result.epochs_run == 2 and [e for e, _ in seen] == [1, 2]
    for key in ("train_loss", "train_acc", "val_acc", "val_loss", "lr", "epoch_seconds", "images_per_second"):
        assert isinstance(seen[0][1][key], float), key
    assert result.best_state is not None and result.best_epoch in (1, 2)
    # Trained in channels-last layout, kept (and so exported) as plain contiguous tensors.
    assert all(v.is_contiguous() for v in result.best_state.values())
    assert any(not v.is_contiguous() for v in build(TINY).to(memory_format=torch.channels_last).state_dict().values())
    model = build(TINY)
    model.load_state_dict(result.best_state)
    assert evaluate(Classifier(model, mini.mean, mini.std), mini.val).accuracy == pytest.approx(result.best_val_acc)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_steps(mini, optimizer):
    lr = RecipeSpace().lr[optimizer][0]
    recipe = dataclasses.replace(QUICK, optimizer=optimizer, lr=lr, ema_decay=0.9, mixup_alpha=0.4,
                                 grad_clip_mode="norm", rotation_degrees=5.0)
    trainer = Trainer(TINY, recipe, mini)
    # The optimizer asked for, with its own settings, not a fallback.
    assert type(trainer.optimizer) is EXPECTED_OPTIMIZER[optimizer]
    group = trainer.optimizer.param_groups[0]
    assert group["initial_lr"] == lr
    if optimizer in ("sgd", "sgd_nesterov"):
        assert group["nesterov"] == (optimizer == "sgd_nesterov") and group["momentum"] == recipe.momentum
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.run()
    assert result.status == "completed"
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))


EXPECTED_OPTIMIZER = {"sgd": torch.optim.SGD, "sgd_nesterov": torch.optim.SGD, "adam": torch.optim.Adam,
                      "adamw": torch.optim.AdamW, "adadelta": torch.optim.Adadelta, "adagrad": torch.optim.Adagrad,
                      "rmsprop": torch.optim.RMSprop}


def test_unknown_optimizer_is_an_error_not_a_fallback(mini):
    from objectives.train import make_optimizer
    recipe = dataclasses.replace(QUICK)
    object.__setattr__(recipe, "optimizer", "lbfgs")  # past Recipe's own check, as a stale stored recipe would be
    with pytest.raises(ValueError, match="recipe.optimizer"):
        make_optimizer(build(TINY), recipe, torch.device("cpu"))


def test_weight_decay_exempts_bn_and_bias(mini):
    trainer = Trainer(TINY, QUICK, mini)
    decayed, exempt = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == QUICK.weight_decay and exempt["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in exempt["params"])
    both = Trainer(TINY, dataclasses.replace(QUICK, decay_bn_and_bias=True), mini)
    assert len(both.optimizer.param_groups) == 1


def lrs_over_run(recipe, mini):
    trainer = Trainer(TINY, recipe, mini)
    lrs = []
    for _ in range(recipe.epochs * trainer.steps_per_epoch):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.scheduler.step()
    return lrs, trainer.steps_per_epoch


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_curves_match_their_definition(mini, schedule):
    recipe = dataclasses.replace(QUICK, schedule=schedule, epochs=10, batch_size=32, lr=0.4,
                                 warmup_fraction=0.25, step_every_epochs=3, step_gamma=0.5)
    lrs, spe = lrs_over_run(recipe, mini)      # 4 steps per epoch, 40 steps, warm-up 10
    assert spe == 4 and len(lrs) == 40
    at = {k: lrs[k] / 0.4 for k in (0, 5, 10, 25, 39)}
    expected = {
        "onecycle": {0: 0.1, 5: 0.55, 10: 1.0, 25: 0.5, 39: 1 / 30},
        "cosine": {0: 0.1, 5: 0.6, 10: 1.0, 25: 0.5, 39: 0.5 * (1 + math.cos(29 / 30 * math.pi))},
        "step": {0: 1.0, 5: 1.0, 10: 1.0, 25: 0.25, 39: 0.125},
        "constant": {0: 1.0, 5: 1.0, 10: 1.0, 25: 1.0, 39: 1.0},
        "multistep": {0: 1.0, 5: 1.0, 10: 1.0, 25: 0.5, 39: 0.25},  # x0.5 at epochs 5 and 8 (50%, 75%)
    }[schedule]
    assert at == pytest.approx(expected)
    assert lr_factor(recipe, spe, 12) == pytest.approx(lrs[12] / 0.4)


@pytest.mark.parametrize("mode", ["none", "norm", "value"])
def test_gradient_clipping_follows_the_recipe(mini, mode):
    """Each clipping mode bounds what it names: the global norm, or every element."""
    trainer = Trainer(TINY, dataclasses.replace(QUICK, grad_clip_mode=mode, grad_clip_max=1e-3), mini)
    model = trainer.model
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    if trainer.clip_gradients is not None:
        trainer.clip_gradients(model.parameters(), 1e-3)
    grads = [p.grad for p in model.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    largest = max(g.abs().max().item() for g in grads)
    if mode == "none":
        assert largest == 0.5
    elif mode == "norm":
        assert norm == pytest.approx(1e-3, rel=1e-3) and largest < 1e-3
    else:
        assert largest == pytest.approx(1e-3) and norm > 1e-3


def test_nan_loss_stops_with_a_reason(mini):
    trainer = Trainer(TINY, dataclasses.replace(QUICK, epochs=4), mini)
    calls = {"n": 0}
    def poison(module, inputs, output):
        calls["n"] += module.training  # count training steps only, not evaluation
        return output * float("nan") if calls["n"] > 2 * trainer.steps_per_epoch else output
    trainer.model.register_forward_hook(poison)
    result = trainer.run()
    assert result.status == "diverged" and "non-finite" in result.reason and "epoch 3" in result.reason
    assert result.epochs_run == 2 and len(result.history) == 2


def test_out_of_memory_ends_the_run_and_frees_it(mini):
    # CUDA OOM cannot happen on the CPU: raise the very exception PyTorch raises, mid-epoch.
    trainer = Trainer(TINY, dataclasses.replace(QUICK, epochs=3), mini)
    def oom(module, inputs, output):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    trainer.model.register_forward_hook(oom)
    result = trainer.run()
    assert result.status == "oom" and "out of memory" in result.reason
    assert trainer.model is None and trainer.train_images is None and trainer.optimizer is None
    assert train(TINY, QUICK, mini).status == "completed"  # the process goes on


def test_seeded_cpu_runs_are_reproducible(mini):
    recipe = dataclasses.replace(QUICK, epochs=2, mixup_alpha=0.4, rotation_degrees=5.0)
    runs = [train(TINY, recipe, mini, seed=s) for s in (3, 3, 4)]
    strip = lambda h: [{k: v for k, v in e.items() if "second" not in k} for e in h]
    assert strip(runs[0].history) == strip(runs[1].history)
    assert all(torch.equal(runs[0].best_state[k], runs[1].best_state[k]) for k in runs[0].best_state)
    assert strip(runs[0].history) != strip(runs[2].history)


def test_resume_from_checkpoint_equals_uninterrupted_run(mini):
    recipe = dataclasses.replace(QUICK, epochs=4, mixup_alpha=0.2, ema_decay=0.9)
    straight = Trainer(TINY, recipe, mini, seed=1).run()
    first = Trainer(TINY, recipe, mini, seed=1)
    first.run(on_epoch=lambda epoch, m: epoch == 2)
    buf = io.BytesIO()
    torch.save(first.checkpoint(), buf)
    buf.seek(0)
    resumed = Trainer(TINY, recipe, mini, seed=99)
    resumed.load_checkpoint(torch.load(buf, weights_only=True))
    result = resumed.run()
    strip = lambda h: [{k: v for k, v in e.items() if "second" not in k} for e in h]
    assert result.epochs_run == 4 and strip(result.history) == strip(straight.history)
    assert all(torch.equal(result.best_state[k], straight.best_state[k]) for k in straight.best_state)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_keeps_the_best_epochs_weights_stored_once(mini, ema):
    """A checkpoint holds no second copy of the weights while the best epoch is the one just
    trained; resumed from there or from a later epoch, the run's best weights are still exactly
    the best epoch's."""
    recipe = dataclasses.replace(QUICK, epochs=5, lr=0.3, ema_decay=ema)
    straight = Trainer(TINY, recipe, mini, seed=1).run()
    best_flags = [h["is_best"] for h in straight.history[:-1]]
    stops = {flag: best_flags.index(flag) + 1 for flag in (True, False) if flag in best_flags}
    assert set(stops) == {True, False}, straight.history  # this seed has both kinds of epoch to stop after
    for best_is_current, stop in stops.items():
        first = Trainer(TINY, recipe, mini, seed=1)
        first.run(on_epoch=lambda epoch, m: epoch == stop)
        buf = io.BytesIO()
        torch.save(first.checkpoint(), buf)
        buf.seek(0)
        ckpt = torch.load(buf, weights_only=True)
        assert ckpt["best_is_current"] == best_is_current
        assert (ckpt["best_state"] is None) == best_is_current
        resumed = Trainer(TINY, recipe, mini, seed=99)
        resumed.load_checkpoint(ckpt)
        result = resumed.run()
        assert result.best_epoch == straight.best_epoch
        assert all(torch.equal(result.best_state[k], straight.best_state[k]) for k in straight.best_state)


def test_a_version_1_checkpoint_still_resumes(mini):
    """Workers upgraded mid-study continue the trials older workers checkpointed."""
    recipe = dataclasses.replace(QUICK, epochs=3)
    straight = Trainer(TINY, recipe, mini, seed=1).run()
    first = Trainer(TINY, recipe, mini, seed=1)
    first.run(on_epoch=lambda epoch, m: epoch == 2)
    v1 = {**first.checkpoint(), "format": "resnet-search/resume-v1", "best_state": first.best_state}
    del v1["best_is_current"]
    resumed = Trainer(TINY, recipe, mini, seed=99)
    resumed.load_checkpoint(v1)
    result = resumed.run()
    assert all(torch.equal(result.best_state[k], straight.best_state[k]) for k in straight.best_state)


def test_resume_checkpoint_of_another_run_is_refused_before_anything_loads(mini):
    buf = io.BytesIO()
    torch.save(Trainer(TINY, QUICK, mini, seed=1).checkpoint(), buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # as the objective reads it back
    assert ckpt["format"] == "resnet-search/resume-v2" and ckpt["recipe"] == QUICK.to_dict()
    # Same weight shapes, other activation: without the check this would load and train on silently.
    other_arch = dataclasses.replace(TINY, activation="silu")
    for arch, recipe, message in [(other_arch, QUICK, "another architecture (differs in activation)"),
                                  (TINY, dataclasses.replace(QUICK, lr=QUICK.lr / 2), "another recipe (differs in lr)")]:
        fresh = Trainer(arch, recipe, mini, seed=2)
        before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
        with pytest.raises(ValueError, match=re.escape(message)):
            fresh.load_checkpoint(ckpt)
        assert fresh.epoch == 0 and all(torch.equal(before[k], v) for k, v in fresh.model.state_dict().items())
    # A checkpoint of an older version (no format) is refused too: the trial starts over.
    old = {k: v for k, v in ckpt.items() if k not in ("format", "architecture", "recipe")}
    with pytest.raises(ValueError, match="not a resnet-search/resume-v2 checkpoint"):
        Trainer(TINY, QUICK, mini).load_checkpoint(old)


def test_flip_tta_averages_logits_of_image_and_mirror(mini):
    model = build(TINY).eval()
    ev = evaluate(Classifier(model, mini.mean, mini.std), mini.val, tta=True)
    x = (mini.val.images.float() / 255 - torch.tensor(mini.mean).view(1, 3, 1, 1)) / torch.tensor(mini.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ((model(x) + model(x.flip(3))) / 2).argmax(1)
    assert torch.equal(ev.predictions, expected)
    assert ev.accuracy == pytest.approx((expected == mini.val.labels).float().mean().item())


def test_normalisation_comes_from_the_training_split(data):
    x = data.train.images.double() / 255
    assert data.mean == pytest.approx(x.mean((0, 2, 3)).tolist())
    assert data.std == pytest.approx(x.std((0, 2, 3)).tolist())


def test_sample_recipe_respects_ranges_and_conditions():
    space = RecipeSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        r = sample_recipe(trial, space)
        seen.add(r.optimizer)
        lo, hi = space.lr[r.optimizer]
        assert lo <= r.lr <= hi and r.epochs == 20 and r.batch_size in space.batch_sizes
        assert ("momentum" in trial.params) == (r.optimizer in ("sgd", "sgd_nesterov", "rmsprop"))
        assert [k for k in trial.params if k.startswith("lr_")] == [f"lr_{r.optimizer}"]
        study.tell(trial, 0.0)
    assert seen == set(OPTIMIZERS)
    assert RecipeSpace.from_dict(space.to_dict()) == space


@pytest.mark.parametrize("change, field", [(dict(optimizer="lbfgs"), "optimizer"), (dict(lr=0), "lr"),
                                           (dict(schedule="poly"), "schedule"), (dict(cutout=40), "cutout"),
                                           (dict(optimizer="sgd_nesterov", momentum=0.0), "momentum")])
def test_invalid_recipe_names_the_field(change, field):
    with pytest.raises(ValueError, match=f"recipe.{field}:"):
        Recipe(**change)
