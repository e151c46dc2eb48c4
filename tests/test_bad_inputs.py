"""Bad inputs of every kind, as a user types them: each is refused with exit != 0 and one
line on stderr (no traceback), and nothing stored changes (the database, artifacts, model
files and outputs are byte-for-byte the same afterwards).

Most cases run in-process through `search.cli.main` (what the console script calls), so
the table stays fast; `test_real_processes_print_one_line` runs a few as real processes
to show that no traceback reaches the terminal either.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from objectives import ArchConfig, StageConfig, build
from objectives.checkpoint import model_file
from search.cli import main

from tests.helpers import SEARCH
TINY = ArchConfig(stages=(StageConfig(1, 8), StageConfig(1, 16)), pool_kernel=16)
# A small space whose smallest model fits a 30k budget.
SMALL_SPACE = {"arch": {"num_stages": [2, 2], "blocks": [1, 1], "channels": [8, 16]},
               "recipe": {"epochs": [1, 1], "batch_sizes": [64]}}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A workspace with a study, a space file and a valid model file, built once."""
    root = tmp_path_factory.mktemp("template")
    (root / "space.json").write_text(json.dumps(SMALL_SPACE))
    assert main(["create", "--study", "base", "--storage", f"sqlite:///{root / 'search.db'}", "--space",
                 str(root / "space.json"), "--budget", "30000", "--val-size", "200"]) == 0
    torch.manual_seed(0)
    good = model_file(TINY, {}, build(TINY).state_dict(), [0.5] * 3, [0.25] * 3, {"val_acc": 0.5}, study="trained",
                      trial=0)
    torch.save(good, root / "model.pt")
    (root / "artifacts").mkdir()
    # Studies with one finished trial each, its model file good or damaged, as a worker leaves them.
    for study, content in (("trained", (root / "model.pt").read_bytes()), ("corrupt", b"\x80\x02not a checkpoint")):
        trained_study(root, study, content)
    (root / "adam-space.json").write_text(json.dumps({"recipe": {"optimizers": ["adam"], "lr": {"adam": [3e-4, 3e-3]}}}))
    for study, space_args in (("wide", []), ("adam-only", ["--space", str(root / "adam-space.json")])):  # default arch
        assert main(["create", "--study", study, "--storage", f"sqlite:///{root / 'search.db'}", *space_args]) == 0
    (root / "old-report").mkdir()
    (root / "old-report" / "summary.md").write_text("# an earlier report\n")
    (root / "images.pkl").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "ids": ["a", "b"]}))
    return root


def trained_study(root: Path, name: str, model_bytes: bytes) -> None:
    import io
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.distributions import FloatDistribution
    from core.trials import MACS_ATTR, MODEL_ARTIFACT_ATTR, PARAMS_ATTR
    url = f"sqlite:///{root / 'search.db'}"
    assert main(["create", "--study", name, "--storage", url, "--space", str(root / "space.json"), "--budget", "30000",
                 "--val-size", "200"]) == 0
    FileSystemArtifactStore(str(root / "artifacts")).write(f"{name}-model", io.BytesIO(model_bytes))
    optuna.load_study(study_name=name, storage=url).add_trial(optuna.trial.create_trial(
        value=0.5, params={"head_dropout": 0.1}, distributions={"head_dropout": FloatDistribution(0.0, 0.5)},
        user_attrs={PARAMS_ATTR: 1000, MACS_ATTR: 10000, MODEL_ARTIFACT_ATTR: f"{name}-model"}))


@pytest.fixture
def ws(template, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the template; commands default to its storage and artifacts."""
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    monkeypatch.setenv("SEARCH_STORAGE", f"sqlite:///{root / 'search.db'}")
    monkeypatch.setenv("SEARCH_ARTIFACTS", str(root / "artifacts"))
    monkeypatch.setenv("SEARCH_DATA_DIR", str(root / "no-data-here"))
    monkeypatch.chdir(root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file's hash and every folder, so a file or folder a command created shows too."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


# ---- inputs the cases write into the workspace ------------------------------------------

def space(ws: Path, data) -> str:
    path = ws / "bad-space.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def recipe_space(**fields):
    return lambda ws: space(ws, {"recipe": fields})


def arch_space(**fields):
    return lambda ws: space(ws, {"arch": fields})


def model(ws: Path, change) -> str:
    data = torch.load(ws / "model.pt", weights_only=True)
    change(data)
    path = ws / "bad-model.pt"
    torch.save(data, path)
    return str(path)


def without(*keys):
    return lambda d: [d.pop(k) for k in keys]


def drop_half_the_weights(d):
    d["state_dict"] = dict(list(d["state_dict"].items())[: len(d["state_dict"]) // 2])


def other_architecture(d):
    d["architecture"] = ArchConfig(stages=(StageConfig(1, 8), StageConfig(1, 24)), pool_kernel=16).to_dict()


def smaller_architecture(d):  # fewer parameters than the file holds, in other shapes
    d["architecture"] = ArchConfig(stages=(StageConfig(1, 8), StageConfig(1, 12)), pool_kernel=16).to_dict()


def huge_architecture(d):  # ~10^11 parameters, the widest and deepest allowed: building it would ask for 300 GB
    d["architecture"] = ArchConfig(stages=(StageConfig(256, 4096),), pool_kernel=32).to_dict()


def set_norm(key, values):
    def change(d):
        d["normalization"][key] = values
    return change


def raw_file(name: str, content: bytes):
    def make(ws: Path) -> str:
        (ws / name).write_bytes(content)
        return str(ws / name)
    return make


def truncated_db(ws: Path) -> str:
    data = (ws / "search.db").read_bytes()
    (ws / "cut.db").write_bytes(data[: len(data) // 3])
    return f"sqlite:///{ws / 'cut.db'}"


def hopeless_study(ws: Path) -> str:
    """A study stored without the create-time check (as an older version wrote it)."""
    url = os.environ["SEARCH_STORAGE"]
    study = optuna.create_study(study_name="hopeless", storage=url, direction="maximize")
    stored = optuna.load_study(study_name="base", storage=url).user_attrs["definition"]
    study.set_user_attr("definition", {**stored, "budget": 10})
    return "hopeless"


def empty_images(ws: Path) -> str:
    path = ws / "empty.pkl"
    path.write_bytes(pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "ids": []}))
    return str(path)


def arch_json(ws: Path, data) -> str:
    path = ws / "arch.json"
    path.write_text(json.dumps(data))
    return str(path)


def typo_db(ws: Path) -> str:
    return f"sqlite:///{ws / 'serach.db'}"


# Commands that only read a study (enqueue adds a trial, but to a study that must exist).
READERS = [("status", "status --study base"), ("pareto", "pareto --study base"),
           ("report", "report --study base --out rep"), ("export-best", "export-best --study base --out best.pt"),
           ("dashboard", "dashboard --study base"), ("enqueue", "enqueue --study base --preset resnet20-he"),
           # not readers, but they join a study that must exist: a typo creates nothing either
           ("worker", "worker --study base --gpus none"), ("finalize", "finalize --study base")]
C = "create --study new --budget 30000 --space {}"   # a create that only the space can spoil
W = "worker --study base --gpus none"                 # a worker that only its flags can spoil

# (id, command line with {} filled by the maker's result, maker or None, words the one line must hold)
CASES = [
    # Space and recipe ranges: refused at create, naming the field.
    ("batch-size-0", C, recipe_space(batch_sizes=[0]), "space.recipe.batch_sizes"),
    ("batch-size-string", C, recipe_space(batch_sizes=["64"]), "space.recipe.batch_sizes"),
    ("epochs-0", C, recipe_space(epochs=[0, 0]), "space.recipe.epochs"),
    ("epochs-float", C, recipe_space(epochs=[1.5, 2]), "space.recipe.epochs"),
    ("epochs-reversed", C, recipe_space(epochs=[5, 2]), "space.recipe.epochs"),
    ("momentum-above-1", C, recipe_space(momentum=[0.5, 1.5]), "space.recipe.momentum"),
    ("momentum-0-nesterov", C, recipe_space(momentum=[0.0, 0.9]), "space.recipe.momentum"),
    ("crop-padding-20", C, recipe_space(crop_paddings=[20]), "space.recipe.crop_paddings"),
    ("ema-decay-1", C, recipe_space(ema_decays=[1.0]), "space.recipe.ema_decays"),
    ("label-smoothing-above-1", C, recipe_space(label_smoothing=[0.0, 1.5]), "space.recipe.label_smoothing"),
    ("label-smoothing-reversed", C, recipe_space(label_smoothing=[0.2, 0.1]), "space.recipe.label_smoothing"),
    ("lr-nan", C, lambda ws: space(ws, '{"recipe": {"optimizers": ["adam"], "lr": {"adam": [NaN, 0.01]}}}'),
     "space.recipe.lr.adam"),
    ("lr-infinity", C, lambda ws: space(ws, '{"recipe": {"optimizers": ["adam"], "lr": {"adam": [0.001, Infinity]}}}'),
     "space.recipe.lr.adam"),
    ("lr-zero", C, recipe_space(optimizers=["adam"], lr={"adam": [0, 0.01]}), "space.recipe.lr.adam"),
    ("lr-number-not-range", C, recipe_space(optimizers=["adam"], lr={"adam": 0.01}), "space.recipe.lr.adam"),
    ("lr-one-value", C, recipe_space(optimizers=["adam"], lr={"adam": [0.01]}), "space.recipe.lr.adam"),
    ("lr-list-not-table", C, recipe_space(lr=[0.01, 0.1]), "space.recipe.lr"),
    ("lr-string-bound", C, recipe_space(optimizers=["adam"], lr={"adam": ["0.001", 0.01]}), "space.recipe.lr.adam"),
    ("lr-unknown-optimizer", C, recipe_space(lr={"lbfgs": [0.1, 1.0]}), "space.recipe.lr"),
    ("lr-missing-for-optimizer", C, recipe_space(optimizers=["sgd"], lr={"adam": [0.001, 0.01]}), "space.recipe.lr"),
    ("optimizer-unknown", C, recipe_space(optimizers=["lbfgs"]), "space.recipe.optimizers"),
    ("optimizers-empty", C, recipe_space(optimizers=[]), "space.recipe.optimizers"),
    ("weight-decay-negative", C, recipe_space(weight_decay=[-0.1, 0.1]), "space.recipe.weight_decay"),
    ("grad-clip-0", C, recipe_space(grad_clip_max=[0, 1]), "space.recipe.grad_clip_max"),
    ("schedule-unknown", C, recipe_space(schedules=["poly"]), "space.recipe.schedules"),
    ("rotation-200", C, recipe_space(rotations=[200]), "space.recipe.rotations"),
    ("mixup-negative", C, recipe_space(mixup_alphas=[-0.1]), "space.recipe.mixup_alphas"),
    ("cutout-40", C, recipe_space(cutouts=[40]), "space.recipe.cutouts"),
    ("padding-mode-unknown", C, recipe_space(padding_modes=["wrap"]), "space.recipe.padding_modes"),
    ("grad-clip-mode-unknown", C, recipe_space(grad_clip_modes=["clip"]), "space.recipe.grad_clip_modes"),
    ("flip-not-bool", C, recipe_space(flips=["yes"]), "space.recipe.flips"),
    ("tta-flip-int", C, recipe_space(tta_flips=[1]), "space.recipe.tta_flips"),
    ("recipe-unknown-field", C, recipe_space(warmup=[0.1]), "unknown field"),
    ("blocks-floats", C, arch_space(blocks=[1.5, 2.5]), "space.blocks"),
    ("blocks-0", C, arch_space(blocks=[0, 2]), "space.blocks"),
    ("blocks-billion", C, arch_space(blocks=[1, 10**9]), "space.blocks"),
    ("num-stages-0-7", C, arch_space(num_stages=[0, 7]), "space.num_stages"),
    ("num-stages-one-value", C, arch_space(num_stages=[3]), "space.num_stages"),
    ("num-stages-string", C, arch_space(num_stages="3"), "space.num_stages"),
    ("channels-0", C, arch_space(channels=[0, 16]), "space.channels"),
    ("channels-float", C, arch_space(channels=[16.5]), "space.channels"),
    ("kernel-even", C, arch_space(conv_kernels=[2, 3]), "space.conv_kernels"),
    ("activation-unknown", C, arch_space(activations=["tanh"]), "space.activations"),
    ("dropout-1", C, arch_space(block_dropout=[0.0, 1.0]), "space.block_dropout"),
    ("dropout-string", C, arch_space(head_dropout=["a", 0.2]), "space.head_dropout"),
    ("stem-width-0", C, arch_space(stem_widths=[0]), "space.stem_widths"),
    ("se-ratio-negative", C, arch_space(se_ratios=[-1]), "space.se_ratios"),
    ("arch-unknown-field", C, arch_space(width=[1, 2]), "unknown field"),
    ("space-not-object", C, lambda ws: space(ws, [1, 2]), "space"),
    ("space-not-json", C, lambda ws: space(ws, "{"), "not valid JSON"),
    ("space-extra-section", C, lambda ws: space(ws, {"model": {}}), "space"),
    ("space-arch-list", C, lambda ws: space(ws, {"arch": []}), "space.arch"),
    ("space-file-missing", "create --study new --space {}", lambda ws: str(ws / "none.json"), "cannot read"),
    # The study's definition.
    ("budget-0", "create --study new --budget 0", None, "--budget"),
    ("budget-below-smallest-model", "create --study new --budget 1", None, "budget"),
    ("val-size-over-training-set", "create --study new --val-size 60000", None, "val_size"),
    ("val-size-0", "create --study new --val-size 0", None, "--val-size"),
    ("seed-negative", "create --study new --seed -1", None, "--seed"),
    ("epochs-flag-0", "create --study new --epochs 0", None, "--epochs"),
    ("train-limit-0", "create --study new --train-limit 0", None, "--train-limit"),
    ("pruner-unknown", "create --study new --pruner asha", None, "--pruner"),
    ("same-name-other-definition", "create --study base --budget 40000", None, "different definition"),
    # Storage.
    ("study-name-empty", "create --study {}", lambda ws: "", "study name"),
    ("study-name-blank", "create --study {}", lambda ws: "   ", "study name"),
    ("study-name-control-chars", "create --study {}", lambda ws: "a\nb", "study name"),
    ("study-name-1000-chars-sqlite", "create --study {}", lambda ws: "x" * 1000, "512 characters"),
    ("sqlite-read-only", "create --study new --storage {}",
     lambda ws: f"sqlite:///file:{ws / 'search.db'}?mode=ro&uri=true", "readonly database"),
    ("sqlite-random-bytes", "status --study base --storage sqlite:///{}", raw_file("noise.db", os.urandom(8192)),
     "database"),
    ("sqlite-create-random-bytes", "create --study new --storage sqlite:///{}",
     raw_file("noise.db", os.urandom(8192)), "database"),
    ("sqlite-truncated", "status --study base --storage {}", truncated_db, "database"),
    ("sqlite-missing-folder", "status --study base --storage {}", lambda ws: f"sqlite:///{ws / 'no' / 'x.db'}",
     "storage"),
    ("mysql-url", "status --study base --storage mysql://u:pw@localhost/db", None, "'mysql://u:***@localhost/db'"),
    ("unknown-url", "status --study base --storage redis://localhost", None, "bad storage URL"),
    ("not-a-url", "status --study base --storage search.db", None, "bad storage URL"),
    ("url-port-not-a-number", "status --study base --storage postgresql+psycopg2://u:pw@localhost:db/x", None,
     "bad storage URL"),
    ("unknown-study", "status --study nope", None, "no study named 'nope'"),
    # Worker flags.
    ("timeout-0", W + " --timeout 0", None, "--timeout"),
    ("timeout-nan", W + " --timeout nan", None, "--timeout"),
    ("timeout-negative", W + " --timeout -5", None, "--timeout"),
    ("timeout-inf", W + " --timeout inf", None, "--timeout"),
    ("heartbeat-beyond-sleep", W + " --heartbeat 10000000000000", None, "--heartbeat"),
    ("heartbeat-0", W + " --heartbeat 0", None, "--heartbeat"),
    ("grace-equal-heartbeat", W + " --heartbeat 20 --grace 20", None, "--grace"),
    ("grace-below-heartbeat", W + " --heartbeat 30 --grace 10", None, "--grace"),
    ("run-grace-equal-heartbeat", "run --study new --budget 30000 --heartbeat 5 --grace 5", None, "--grace"),
    ("run-gpus-negative", "run --study new --budget 30000 --gpus -1", None, "--gpus"),
    ("gpus-negative", "worker --study base --gpus -1", None, "--gpus"),
    ("gpus-twice", "worker --study base --gpus 0,0", None, "--gpus"),
    ("gpus-word", "worker --study base --gpus some", None, "--gpus"),
    ("per-gpu-0", W + " --per-gpu 0", None, "--per-gpu"),
    ("per-gpu-more-than-cpus", W + " --per-gpu 10000", None, "--per-gpu: 10000 CPU processes"),
    ("n-trials-0", W + " --n-trials 0", None, "--n-trials"),
    ("db-wait-nan", W + " --db-wait nan", None, "--db-wait"),
    ("worker-hopeless-study", "worker --study {} --gpus none", hopeless_study, "smallest model"),
    # Model files.
    ("model-random-bytes", "evaluate {}", raw_file("junk.pt", os.urandom(500)), "not a model file"),
    ("model-missing", "evaluate {}", lambda ws: str(ws / "none.pt"), "no such file"),
    ("model-no-state-dict", "evaluate {}", lambda ws: model(ws, without("state_dict")), "missing state_dict"),
    ("model-no-normalization", "evaluate {}", lambda ws: model(ws, without("normalization")),
     "missing normalization"),
    ("model-partial-state-dict", "evaluate {}", lambda ws: model(ws, drop_half_the_weights), "do not"),
    ("model-other-architecture", "evaluate {}", lambda ws: model(ws, other_architecture), "do not"),
    ("model-smaller-architecture", "evaluate {}", lambda ws: model(ws, smaller_architecture),
     "weights do not match the architecture"),
    ("model-huge-architecture", "evaluate {}", lambda ws: model(ws, huge_architecture), "do not belong together"),
    ("model-std-0", "evaluate {}", lambda ws: model(ws, set_norm("std", [0.2, 0.0, 0.2])), "normalization.std"),
    ("model-mean-nan", "evaluate {}", lambda ws: model(ws, set_norm("mean", [0.5, float("nan"), 0.5])),
     "normalization.mean"),
    ("model-std-two-values", "evaluate {}", lambda ws: model(ws, set_norm("std", [0.2, 0.2])), "normalization.std"),
    ("predict-zero-images", "predict model.pt --out out.csv --input {}", empty_images, "no images"),
    # Architecture files.
    ("arch-file-list", "arch --file {}", lambda ws: arch_json(ws, [1, 2]), "architecture"),
    ("arch-file-float-blocks", "arch --file {}",
     lambda ws: arch_json(ws, {"stages": [{"blocks": 1.5, "channels": 16}], "pool_kernel": 4}), "blocks"),
    ("arch-file-billion-blocks", "arch --file {}",
     lambda ws: arch_json(ws, {"stages": [{"blocks": 10**9, "channels": 16}], "pool_kernel": 4}), "blocks"),
    ("arch-file-string-channels", "arch --file {}",
     lambda ws: arch_json(ws, {"stages": [{"blocks": 1, "channels": "16"}], "pool_kernel": 4}), "channels"),
    ("enqueue-unknown-preset", "enqueue --study base --preset vgg", None, "unknown preset"),
] + [(f"{name}-{db}", f"{line} --storage {{}}", maker, words) for name, line in READERS
     for db, maker, words in (("typo-sqlite", typo_db, "no such database file"),
                              ("empty-sqlite", lambda ws: "sqlite:///" + raw_file("empty.db", b"")(ws), "holds no studies"))
     ] + [
    # --out: a file in a folder that exists; an existing file is replaced only with --force.
    ("export-best-out-missing-folder", "export-best --study trained --out typo/best.pt", None, "no folder typo"),
    ("export-best-out-exists", "export-best --study trained --out space.json", None, "add --force"),
    ("export-best-checkpoint-beside-exists", "export-best --study trained --format torchscript --out model.ts", None,
     "model.pt: exists; add --force"),
    ("predict-out-missing-folder", "predict model.pt --input images.pkl --out typo/p.csv", None, "no folder typo"),
    ("predict-out-exists", "predict model.pt --input images.pkl --out space.json", None, "add --force"),
    ("report-out-missing-parent", "report --study trained --out typo/report", None, "no folder typo"),
    ("report-out-holds-a-report", "report --study trained --out old-report", None, "add --force"),
    ("evaluate-creates-no-data-folder", "evaluate model.pt", None, "no CIFAR-10"),
    # enqueue checks a published recipe against the study's space, as it checks the architecture.
    ("enqueue-recipe-optimizer-outside-space", "enqueue --study adam-only --preset se-resnet-rawat --with-recipe",
     None, "optimizer 'sgd' (space: ['adam'])"),
    ("enqueue-recipe-epochs-outside-space", "enqueue --study wide --preset resnet9-kuangliu --with-recipe", None,
     "epochs 100 (space: [20, 20])"),
    ("enqueue-outside-space-without-recipe", "enqueue --study wide --preset resnet9-kuangliu --outside-space", None,
     "--with-recipe"),
    # Every field of a space is capped; a huge or deeply nested file is refused before it is parsed.
    ("channels-trillion", C, arch_space(channels=[16, 10**12]), "space.channels"),
    ("stem-width-trillion", C, arch_space(stem_widths=[10**12]), "space.stem_widths"),
    ("se-ratio-trillion", C, arch_space(se_ratios=[0, 10**12]), "space.se_ratios"),
    ("conv-kernel-billion", C, arch_space(conv_kernels=[3, 10**9 + 1]), "space.conv_kernels"),
    ("stem-kernel-1001", C, arch_space(stem_kernels=[1001]), "space.stem_kernels"),
    ("grad-clip-max-1e300", C, recipe_space(grad_clip_modes=["norm"], grad_clip_max=[1, 1e300]),
     "space.recipe.grad_clip_max"),
    ("channels-1000-choices", C, arch_space(channels=list(range(8, 1008))), "space.channels"),
    ("space-nested-100000-deep", C, lambda ws: space(ws, "[" * 100_000), "nested"),
    ("space-5-megabytes", C, lambda ws: space(ws, " " * 5_000_000 + "{}"), "too large"),
    ("arch-file-channels-trillion", "arch --file {}",
     lambda ws: arch_json(ws, {"stages": [{"blocks": 1, "channels": 10**12}], "pool_kernel": 4}), "channels"),
    ("arch-file-kernel-billion", "arch --file {}",
     lambda ws: arch_json(ws, {"stages": [{"blocks": 1, "channels": 16, "conv_kernel": 10**9 + 1}],
                               "pool_kernel": 4}), "conv_kernel"),
    ("arch-file-nested-100000-deep", "arch --file {}", raw_file("deep.json", b"[" * 100_000), "nested"),
    # Expected errors take the one-line path: no library warning, banner or unsafe advice before it.
    ("dashboard-port-70000", "dashboard --study base --port 70000", None, "--port"),
    ("evaluate-plain-pickle", "evaluate {}", raw_file("plain.pkl", pickle.dumps({"a": 1}, protocol=4)),
     "not a model file"),
    ("export-best-damaged-model-file", "export-best --study corrupt --out best.pt", None, "damaged"),
    # Storage URLs: an unescaped user name or password is refused, before connecting, showing none of it.
    ("password-with-at-and-slash", "status --study base --storage {}",
     lambda ws: "postgresql+psycopg2://odd:Xk@9q/Zr7@localhost/db", "urllib.parse.quote"),
    ("password-with-at", "status --study base --storage {}",
     lambda ws: "postgresql+psycopg2://odd:Xk@9q@localhost/db", "urllib.parse.quote"),
    ("password-with-slash", "status --study base --storage {}",
     lambda ws: "postgresql+psycopg2://odd:Xk/9q@localhost/db", "urllib.parse.quote"),
    ("password-with-question-mark", "status --study base --storage {}",
     lambda ws: "postgresql+psycopg2://odd:Xk?9q@localhost/db", "urllib.parse.quote"),
    ("password-with-hash", "status --study base --storage {}",
     lambda ws: "postgresql+psycopg2://odd:Xk#9q@localhost/db", "urllib.parse.quote"),
    ("password-with-space", "create --study new --storage {}",
     lambda ws: "postgresql+psycopg2://odd:Xk 9q@localhost/db", "urllib.parse.quote"),
    ("password-with-lone-percent", "enqueue --study base --preset resnet20-he --storage {}",
     lambda ws: "postgresql+psycopg2://odd:Xk%9q@localhost/db", "urllib.parse.quote"),
]


def command(ws: Path, line: str, maker) -> list[str]:
    import shlex
    words = shlex.split(line)
    if maker is not None:
        value = maker(ws)
        words = [w.replace("{}", value) if "{}" in w else w for w in words]
    return words


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("line, maker, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(ws, capsys, line, maker, words):
    argv = command(ws, line, maker)
    before = snapshot(ws)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out = capsys.readouterr()
    assert code not in (0, None), out.out
    assert out.out == "", out.out  # a refusal prints nothing before its one line
    line = one_line(out.err)
    assert words in line
    assert "weights_only" not in line, line  # torch's advice to load unsafely is never passed on
    assert not any(secret in line for secret in ("Xk", "9q", "Zr7")), line  # no piece of a test password
    assert snapshot(ws) == before


def test_long_study_name_on_postgresql(postgres, capsys):
    url = postgres.new_database()
    assert main(["create", "--study", "kept", "--storage", url, "--budget", "30000"]) == 0
    capsys.readouterr()
    assert main(["create", "--study", "x" * 1000, "--storage", url, "--budget", "30000"]) == 1
    assert "512 characters" in one_line(capsys.readouterr().err)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["kept"]


def test_readers_create_no_table_in_an_empty_postgresql_database(postgres, ws, capsys):
    """On PostgreSQL a reader used to lay out Optuna's 13 tables, then say "no study"."""
    import sqlalchemy
    url = postgres.new_database()
    engine = sqlalchemy.create_engine(url)
    try:
        for name, line in READERS:
            before = snapshot(ws)
            code = main(command(ws, f"{line} --storage {url}", None))
            line = one_line(capsys.readouterr().err)
            assert code == 1 and "holds no studies" in line, (name, line)
            assert sqlalchemy.inspect(engine).get_table_names() == [], name
            assert snapshot(ws) == before, name
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg2://u:secret@localhost:notaport/db",  # unreadable (the port): refused
    "mysql://u:secret@localhost/db",  # a backend we do not run on
    "postgresql+psycopg2://u:secret@127.0.0.1:{port}/db?application_name=a@b",  # nobody listening there
])
def test_storage_password_never_reaches_the_error_line(ws, capsys, url):
    from tests.servers import free_port
    code = main(["status", "--study", "base", "--storage", url.format(port=free_port()), "--db-wait", "0"])
    line = one_line(capsys.readouterr().err)
    assert code == 1 and "secret" not in line and "***" in line, line


REAL_PROCESS_CASES = ["batch-size-0", "sqlite-random-bytes", "model-no-state-dict", "timeout-nan",
                      "grace-equal-heartbeat", "model-huge-architecture",
                      # a warning shows on a terminal, not in-process (pytest captures it)
                      "evaluate-plain-pickle", "export-best-damaged-model-file", "space-nested-100000-deep"]


@pytest.mark.parametrize("case", REAL_PROCESS_CASES)
def test_real_processes_print_one_line(ws, case):
    _, line, maker, words = next(c for c in CASES if c[0] == case)
    argv = command(ws, line, maker)
    before = snapshot(ws)
    proc = subprocess.run([SEARCH, *argv], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode != 0 and proc.stdout == ""
    assert words in one_line(proc.stderr)
    assert snapshot(ws) == before


def test_closed_pipe_ends_quietly(ws):
    """`search status | head -1`: the reader goes away before the output is written."""
    proc = subprocess.Popen([SEARCH, "status", "--study", "base"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ))
    proc.stdout.close()  # as `head` does once it has its lines
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_arch_file_takes_what_arch_prints(ws):
    printed = subprocess.run([SEARCH, "arch", "--preset", "resnet20-he"], capture_output=True, text=True,
                             check=True).stdout
    (ws / "printed.json").write_text(printed)
    again = subprocess.run([SEARCH, "arch", "--file", str(ws / "printed.json")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(printed)


def test_smallest_arch_is_no_larger_than_any_sample():
    from objectives import count_params
    from objectives.feasibility import smallest_arch
    from objectives.space import ArchSpace, sample_arch
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for space in (ArchSpace(), ArchSpace(stem_widths=(64,), channels=(16, 32, 64), se_ratios=(4, 8))):
        floor = count_params(smallest_arch(space))
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(300):
            trial = study.ask()
            assert count_params(sample_arch(trial, space)) >= floor
            study.tell(trial, 0.0)
    # And it is a model of the space (every value one the space can produce).
    from objectives.space import arch_to_params
    for space in (ArchSpace(), ArchSpace(stem_widths=(64,), channels=(16, 32, 64), se_ratios=(4, 8))):
        arch_to_params(smallest_arch(space), space)


def test_force_replaces_an_existing_output(ws, capsys):
    """The one convention of every command that writes --out: refuse to replace, unless --force."""
    assert main(["export-best", "--study", "trained", "--out", "space.json", "--force"]) == 0
    assert torch.load(ws / "space.json", weights_only=True)["format"] == "resnet-search/model-v1"
    assert main(["predict", "model.pt", "--input", "images.pkl", "--out", "space.json", "--force"]) == 0
    assert (ws / "space.json").read_text().splitlines()[0] == "ID,Labels"
    capsys.readouterr()


def test_dashboard_port_in_use_is_one_line(ws, capsys):
    """The web server's banner and Optuna's own lines used to come first."""
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = snapshot(ws)
        code = main(["dashboard", "--study", "base", "--port", str(port)])
        out = capsys.readouterr()
    assert code == 1 and out.out == ""
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(out.err)
    assert snapshot(ws) == before


def test_a_damaged_checkpoint_is_one_safe_message(ws, recwarn):
    """What a retried trial stores as its resume_error (search/objective.py) and export-best says:
    torch's UnpicklingError advises weights_only=False, which would run the file's code."""
    from optuna.artifacts import FileSystemArtifactStore
    from storage.artifacts import download_torch
    with pytest.raises(ValueError) as error:
        download_torch(FileSystemArtifactStore(str(ws / "artifacts")), "corrupt-model")
    assert "damaged" in str(error.value) and "weights_only" not in str(error.value)
    assert not recwarn.list


def test_enqueue_outside_the_space_only_on_purpose_and_recorded(ws, capsys):
    assert main(["enqueue", "--study", "adam-only", "--preset", "se-resnet-rawat", "--with-recipe",
                 "--outside-space"]) == 0
    capsys.readouterr()
    (trial,) = optuna.load_study(study_name="adam-only", storage=os.environ["SEARCH_STORAGE"]).get_trials()
    assert "optimizer 'sgd' (space: ['adam'])" in trial.user_attrs["outside_space"]
    assert trial.user_attrs["fixed_recipe"]["optimizer"] == "sgd"
