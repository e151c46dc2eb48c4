"""What a person watching sees while work runs: a line per epoch of each trial, and a
progress bar (tqdm on a terminal, plain periodic lines in a log) for long evaluations."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

if TYPE_CHECKING:  # stdlib only at run time: evaluate and predict import this module
    from objectives.architecture import ArchConfig
    from objectives.recipe import Recipe

PLAIN_EVERY_SECONDS = 10.0  # a log gets a line this often, not one per batch


def plural(n: int, noun: str) -> str:
    """`1 trial`, `2 trials`, `1,000 images`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 10 min: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class EpochPrinter:
    """Prints one line per finished epoch of a trial:
    `[demo] trial 3 epoch 2/5: train loss 1.523, val acc 0.4410, 812 img/s, trial ETA 24 s`.
    The trial's ETA is its remaining epochs at the mean epoch time so far."""

    def __init__(self, study: str, quiet: bool = False, out: TextIO | None = None):
        self.study, self.quiet, self.out = study, quiet, out

    def started(self, trial: int, epochs: int, user_attrs: dict[str, Any]) -> None:
        """`[demo] trial 3 started: adamw lr 0.002, batch 128; ...; 52,194 params, 2 epochs`: said at once,
        so a first epoch that takes minutes on a busy CPU is not minutes of silence."""
        if self.quiet:
            return
        from core.trials import PARAMS_ATTR
        config = describe_config(user_attrs)
        print(f"[{self.study}] trial {trial} started: {config + '; ' if config else ''}"
              f"{user_attrs.get(PARAMS_ATTR, 0):,} params, {plural(epochs, 'epoch')}",
              file=self.out or sys.stdout, flush=True)

    def __call__(self, trial: int, epoch: int, epochs: int, metrics: dict[str, Any], seconds_so_far: float,
                 epochs_this_run: int) -> None:
        if self.quiet:
            return
        per_epoch = seconds_so_far / max(1, epochs_this_run)
        eta = format_duration(per_epoch * (epochs - epoch)) if epoch < epochs else "done"
        val = "no val split" if metrics["val_acc"] is None else f"val acc {metrics['val_acc']:.4f}"
        print(f"[{self.study}] trial {trial} epoch {epoch}/{epochs}: train loss {metrics['train_loss']:.3f}, "
              f"{val}, {metrics['images_per_second']:.0f} img/s, trial ETA {eta}",
              file=self.out or sys.stdout, flush=True)


@contextmanager
def progress(total: int, desc: str, unit: str = "img", out: TextIO | None = None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`. On a terminal it draws a tqdm bar; otherwise (a log, a pipe) it
    writes `desc: 10,000 img` at the start and `desc: 3,072/10,000 img (31%)` at most every
    PLAIN_EVERY_SECONDS, since a bar redrawn with carriage returns turns into noise in a file."""
    stream = out or sys.stderr
    if stream.isatty():
        from tqdm import tqdm
        with tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=stream, leave=False) as bar:
            yield bar.update
        return
    print(f"{desc}: {total:,} {unit}", file=stream, flush=True)
    done, last = 0, time.monotonic()

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= PLAIN_EVERY_SECONDS and done < total:
            last = now
            print(f"{desc}: {done:,}/{total:,} {unit} ({done / max(1, total):.0%})", file=stream, flush=True)

    yield advance


def describe_arch(arch: "ArchConfig") -> str:
    """An architecture in one line a person reads, as the dashboard shows it:
    `3 stages: 1x16 basic F3 K1, 2x32 basic F3 K1, 1x48 basic F3 K1; stem 3x3; pool 8; relu`."""
    stages = ", ".join(f"{s.blocks}x{s.channels} {s.block} F{s.conv_kernel} K{s.skip_kernel}" for s in arch.stages)
    extras = [f"stem {arch.stem_kernel}x{arch.stem_kernel}" + (f" width {arch.stem_width}" if arch.stem_width else ""),
              f"pool {arch.pool_kernel}", arch.activation]
    extras += [f"SE 1/{arch.se_ratio}"] if arch.se_ratio else []
    extras += [f"dropout {arch.block_dropout:.2g} in blocks"] if arch.block_dropout else []
    extras += [f"dropout {arch.head_dropout:.2g} before the classifier"] if arch.head_dropout else []
    return f"{plural(len(arch.stages), 'stage')}: {stages}; " + "; ".join(extras)


def describe_recipe(r: "Recipe") -> str:
    """A training recipe in one line: `adamw lr 0.0021, momentum 0.9, weight decay 0.0001, batch 128,
    onecycle, 2 epochs; crop pad 4 reflect, flip; label smoothing 0.1; flip averaging on`."""
    parts = [f"{r.optimizer} lr {r.lr:.3g}, momentum {r.momentum:g}, weight decay {r.weight_decay:g}, "
             f"batch {r.batch_size}, {r.schedule}, {plural(r.epochs, 'epoch')}"]
    augment = [f"crop pad {r.crop_padding} {r.padding_mode}"] if r.crop_padding else []
    augment += ["flip"] if r.flip else []
    augment += [f"cutout {r.cutout}"] if r.cutout else []
    augment += [f"mixup {r.mixup_alpha:g}"] if r.mixup_alpha else []
    augment += [f"rotation {r.rotation_degrees:g} deg"] if r.rotation_degrees else []
    parts.append(", ".join(augment) or "no augmentation")
    parts += [f"label smoothing {r.label_smoothing:g}"] if r.label_smoothing else []
    parts += [f"EMA {r.ema_decay:g}"] if r.ema_decay else []
    parts += [f"grad clip {r.grad_clip_mode} {r.grad_clip_max:g}"] if r.grad_clip_mode != "none" else []
    parts.append(f"flip averaging {'on' if r.tta_flip else 'off'}")
    return "; ".join(parts)


def describe_config(user_attrs: dict[str, Any]) -> str:
    """What the sampler chose, short: `adamw lr 0.002, batch 128; 4 basic stages, widths 16-96`."""
    from core.trials import ARCHITECTURE_ATTR, RECIPE_ATTR  # imports optuna: evaluate/predict never need it
    from objectives.architecture import ArchConfig
    recipe, arch = user_attrs.get(RECIPE_ATTR) or {}, user_attrs.get(ARCHITECTURE_ATTR) or {}
    if not recipe or not arch:
        return ""
    stages = ArchConfig.from_dict(arch).stages  # fills what older configs left out (the block type)
    widths = [s.channels for s in stages]
    blocks = "/".join(dict.fromkeys(s.block for s in stages))  # distinct, in stage order
    return (f"{recipe['optimizer']} lr {recipe['lr']:.3g}, batch {recipe['batch_size']}; "
            f"{len(widths)} {blocks} stage{'s' * (len(widths) != 1)}, widths {min(widths)}-{max(widths)}")
