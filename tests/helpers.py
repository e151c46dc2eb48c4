"""Helpers the service, fault, fleet and deploy tests share: the `search` command as a
subprocess, worker processes, small spaces, and reading a study back."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

BIN = Path(sys.executable).parent
SEARCH = str(BIN / "search")

# Small and varied: some configs exceed the 30k budget, adadelta at a tiny lr gets pruned.
VARIED_SPACE = {
    "arch": {"num_stages": [2, 3], "blocks": [1, 1], "channels": [8, 16, 32], "stem_widths": [None],
             "stem_se_ratios": [0], "se_ratios": [0, 4], "activations": ["relu", "silu"], "block_dropout": [0.0, 0.0]},
    "recipe": {"optimizers": ["sgd_nesterov", "adam", "adadelta"], "batch_sizes": [64, 128], "epochs": [3, 3],
               "crop_paddings": [0, 2], "cutouts": [0], "mixup_alphas": [0.0], "rotations": [0.0], "ema_decays": [0.0],
               "lr": {"sgd_nesterov": [0.01, 0.2], "adam": [0.0003, 0.003], "adadelta": [0.0001, 0.001]}},
}
# One fixed, feasible architecture and recipe, several epochs: for fault tests.
FIXED_SPACE = {
    "arch": {"num_stages": [2, 2], "blocks": [1, 1], "channels": [32], "conv_kernels": [3], "skip_kernels": [1],
             "stem_kernels": [3], "stem_widths": [None], "stem_se_ratios": [0], "se_ratios": [0],
             "activations": ["relu"], "block_dropout": [0.0, 0.0], "head_dropout": [0.0, 0.0]},
    "recipe": {"optimizers": ["sgd_nesterov"], "batch_sizes": [64], "epochs": [6, 6], "crop_paddings": [2],
               "padding_modes": ["reflect"], "schedules": ["onecycle"], "decay_bn_and_bias": [False],
               "cutouts": [0], "mixup_alphas": [0.0], "rotations": [0.0], "ema_decays": [0.0],
               "grad_clip_modes": ["none"], "lr": {"sgd_nesterov": [0.05, 0.05]}, "momentum": [0.9, 0.9],
               "weight_decay": [0.0005, 0.0005], "label_smoothing": [0.0, 0.0]},
}


def search(*args, env, check=True, timeout=300):
    proc = subprocess.run([SEARCH, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"search {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def worker(url, study, env, log: Path, *extra):
    return subprocess.Popen([SEARCH, "worker", "--study", study, "--storage", url, "--gpus", "none", *extra],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def space_file(tmp_path, space) -> str:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    return str(path)


def load(url, study):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study, storage=url)


def running_checkpoint(url, study, min_epoch, owner_pid: int | None = None):
    """A RUNNING trial with a checkpoint of at least `min_epoch` (run by process `owner_pid`, when given)."""
    for t in load(url, study).get_trials(states=(TrialState.RUNNING,)):
        ref = t.user_attrs.get("resume_checkpoint")
        if ref and ref["epoch"] >= min_epoch and owner_pid in (None, t.user_attrs["worker"]["pid"]):
            return t, ref
    return None


def one_line_error(proc, code: int | None = 1) -> str:
    """The one line a failed command wrote; it exited `code` (None: any failure code)."""
    assert (proc.returncode != 0 if code is None else proc.returncode == code), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return [l for l in block.splitlines() if l.strip() and not l.startswith("#")]
