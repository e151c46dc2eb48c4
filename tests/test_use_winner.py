"""After a search: evaluate, predict to a competition CSV, portable exports, the report."""
from __future__ import annotations

import csv
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from objectives import ArchConfig, StageConfig
from objectives.checkpoint import load_model, model_file
from objectives.data import load_cifar10
from objectives.recipe import Recipe
from objectives.inference import evaluate, load_classifier
from objectives.prepare import prepare_data
from objectives.train import train
from tests.helpers import VARIED_SPACE, one_line_error, search, space_file

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained(cifar_small, tmp_path_factory):
    """A small model trained here on the rebuilt real CIFAR-10, saved as export-best saves it."""
    data = prepare_data(load_cifar10(cifar_small, download_missing=False), 200, 0, train_limit=512)
    arch = ArchConfig(stages=(StageConfig(1, 16), StageConfig(1, 32)), pool_kernel=4)
    recipe = Recipe(epochs=4, batch_size=64, lr=0.05, tta_flip=False)
    result = train(arch, recipe, data)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(model_file(arch, recipe.to_dict(), result.best_state, data.mean, data.std,
                          {"val_acc": result.best_val_acc}, study="t", trial=0), path)
    return path


@pytest.fixture
def env(cifar_small):
    return dict(os.environ, SEARCH_DATA_DIR=str(cifar_small))


def test_evaluate_reports_accuracy_per_class_and_confusion(trained, cifar_small, env):
    out = json.loads(search("evaluate", str(trained), "--json", env=env).stdout)
    test = load_cifar10(cifar_small).test
    expected = evaluate(load_classifier(trained)[0], test)
    confusion = np.array(out["confusion_matrix"])
    assert out["accuracy"] == expected.accuracy and out["images"] == 200
    assert confusion.sum() == 200 and (confusion.sum(1) == 20).all()
    assert np.trace(confusion) / 200 == pytest.approx(expected.accuracy)
    assert [round(v, 6) for v in out["per_class_accuracy"].values()] == [round(v, 6) for v in np.diag(confusion) / 20]
    table = search("evaluate", str(trained), "--tta", env=env).stdout
    assert "confusion matrix" in table and "flip averaging on (as asked)" in table and "airplane" in table


def test_evaluate_follows_the_recipes_flip_averaging_and_says_so(trained, cifar_small, env, tmp_path):
    """One accuracy per file: `evaluate` uses the flip averaging the model's recipe used (as
    `export-best --evaluate` does), `--tta/--no-tta` overrides it, and every line says which."""
    test = load_cifar10(cifar_small).test
    classifier, info = load_classifier(trained)
    flipped = dict(info, recipe=dict(info["recipe"], tta_flip=True))
    flipped_path = tmp_path / "flipped.pt"
    torch.save(flipped, flipped_path)
    for path, recipe_flips in ((trained, False), (flipped_path, True)):
        out = json.loads(search("evaluate", str(path), "--json", env=env).stdout)
        assert out["tta"] is recipe_flips and out["tta_why"] == "as its recipe"
        assert out["accuracy"] == evaluate(classifier, test, tta=recipe_flips).accuracy
        line = search("evaluate", str(path), env=env).stdout.splitlines()[0]
        assert f"flip averaging {'on' if recipe_flips else 'off'} (as its recipe)" in line and "test accuracy" in line
    asked = json.loads(search("evaluate", str(flipped_path), "--no-tta", "--json", env=env).stdout)
    assert asked["tta"] is False and asked["accuracy"] == evaluate(classifier, test).accuracy


@pytest.fixture(scope="module")
def unlabeled(cifar_small):
    test = load_cifar10(cifar_small).test
    return test.images[:60].numpy(), [f"img{i:03d}" for i in range(60)]


def write_pickle(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def read_csv(path: Path) -> list[list[str]]:
    with open(path) as f:
        return list(csv.reader(f))


def test_predict_both_layouts_and_a_folder_give_the_same_csv(trained, unlabeled, tmp_path, env):
    images, ids = unlabeled  # N x 3 x 32 x 32
    planar = write_pickle(tmp_path / "cifar_test_nolabels.pkl",
                          {b"data": images.reshape(len(images), 3072), b"ids": [i.encode() for i in ids]})
    hwc = write_pickle(tmp_path / "cifar_test_nolabel.pkl",
                       {"data": images.transpose(0, 2, 3, 1).copy(), "ids": np.array(ids)})
    folder = tmp_path / "pngs"
    folder.mkdir()
    for img, name in zip(images, ids):
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{name}.png")
    outputs = []
    for src in (planar, hwc, folder):
        out = tmp_path / f"{src.stem}.csv"
        search("predict", str(trained), "--input", str(src), "--out", str(out), env=env)
        outputs.append(read_csv(out))
    assert outputs[0] == outputs[1] == outputs[2]
    rows = outputs[0]
    assert rows[0] == ["ID", "Labels"] and [r[0] for r in rows[1:]] == ids
    model, info = load_model(trained)
    x = (torch.from_numpy(images).float() / 255 - torch.tensor(info["normalization"]["mean"]).view(1, 3, 1, 1)) \
        / torch.tensor(info["normalization"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert [int(r[1]) for r in rows[1:]] == model(x).argmax(1).tolist()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("name, content, message", [
    ("shape.pkl", {"data": np.zeros((3, 1024), np.uint8), "ids": [1, 2, 3]}, "expected N x 3072"),
    ("hwc.pkl", {"data": np.zeros((3, 3, 32, 32), np.uint8), "ids": [1, 2, 3]}, "expected N x 3072"),
    ("noids.pkl", {"data": np.zeros((3, 3072), np.uint8)}, "missing key(s) ids"),
    ("lengths.pkl", {"data": np.zeros((3, 3072), np.uint8), "ids": [1, 2]}, "3 images but 2 ids"),
    ("float.pkl", {"data": np.zeros((3, 3072), np.float32), "ids": [1, 2, 3]}, "must be uint8"),
    ("list.pkl", [1, 2, 3], "expected a dict"),
    ("evil.pkl", {"data": Evil(), "ids": []}, "refusing to load posix.system"),
])
def test_malformed_inputs_are_refused_clearly(trained, tmp_path, env, name, content, message):
    src = write_pickle(tmp_path / name, content)
    line = one_line_error(search("predict", str(trained), "--input", str(src), "--out", str(tmp_path / "o.csv"),
                                 env=env, check=False))
    assert message in line
    assert not (tmp_path / "o.csv").exists()


def test_not_a_pickle_and_help_says_how_pickles_are_read(trained, tmp_path, env):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(os.urandom(200))
    assert "not a readable pickle" in one_line_error(
        search("predict", str(trained), "--input", str(junk), "--out", str(tmp_path / "o.csv"), env=env, check=False))
    assert "restricted unpickler" in search("predict", "--help", env=env).stdout
    assert "not a model file" in one_line_error(search("evaluate", str(junk), env=env, check=False))


@pytest.fixture(scope="module")
def small_study(cifar_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    env = dict(os.environ, SEARCH_DATA_DIR=str(cifar_small), SEARCH_STORAGE=f"sqlite:///{root / 'search.db'}",
               SEARCH_ARTIFACTS=str(root / "artifacts"), OMP_NUM_THREADS="2")
    search("run", "--study", "winner", "--space", space_file(root, VARIED_SPACE), "--val-size", "200",
           "--budget", "30000", "--pruner", "median", "--gpus", "none", "--n-trials", "6", env=env)
    return root, env


RUN_WITHOUT_PACKAGE = """
import sys, numpy as np, torch
x = torch.from_numpy(np.load(sys.argv[2]))
if sys.argv[1].endswith(".onnx"):
    import onnxruntime
    out = onnxruntime.InferenceSession(sys.argv[1]).run(["logits"], {"images": x.numpy()})[0]
else:
    out = torch.jit.load(sys.argv[1])(x).detach().numpy()
assert not any(m.split(".")[0] in ("objectives", "search", "storage") for m in sys.modules), "used our package"
np.save(sys.argv[3], out)
"""


@pytest.mark.parametrize("fmt, suffix, atol", [("torchscript", ".ts", 1e-4), ("onnx", ".onnx", 1e-3)])
def test_portable_exports_match_the_pytorch_model(small_study, cifar_small, tmp_path, fmt, suffix, atol):
    root, env = small_study
    out = tmp_path / f"best{suffix}"
    search("export-best", "--study", "winner", "--out", str(out), "--format", fmt, env=env)
    checkpoint = out.with_suffix(".pt")
    model, info = load_model(checkpoint)
    images = load_cifar10(cifar_small).test.images[:16].float().div(255)
    np.save(tmp_path / "x.npy", images.numpy())
    # A fresh interpreter in an empty folder, importing torch/onnxruntime only.
    subprocess.run([sys.executable, "-c", RUN_WITHOUT_PACKAGE, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   cwd=tmp_path, check=True, timeout=120)
    norm = info["normalization"]
    with torch.no_grad():
        expected = model((images - torch.tensor(norm["mean"]).view(1, 3, 1, 1)) / torch.tensor(norm["std"]).view(1, 3, 1, 1))
    assert np.allclose(np.load(tmp_path / "y.npy"), expected.numpy(), atol=atol)
    if fmt == "torchscript":  # plain contiguous weights, as in the .pt (evaluation runs channels-last)
        assert all(p.is_contiguous() for p in torch.jit.load(out).parameters())


def test_an_export_format_is_one_registry_entry(small_study, tmp_path, monkeypatch, capsys):
    from search import cli, export
    root, env = small_study
    for name in ("SEARCH_STORAGE", "SEARCH_ARTIFACTS"):
        monkeypatch.setenv(name, env[name])
    # A new format: its writer and one entry, nothing else; the CLI offers and dispatches it.
    monkeypatch.setitem(export.EXPORT_FORMATS, "weights", export.ExportFormat(
        lambda data, out: torch.save(data["state_dict"], out), ".sd", "the bare state_dict"))
    monkeypatch.setitem(export.EXPORT_FORMATS, "needs-extra", export.ExportFormat(
        lambda data, out: None, ".x", "a format whose extra is missing", "nothing", ("no_such_module_here",)))
    out = tmp_path / "best.sd"
    assert cli.main(["export-best", "--study", "winner", "--out", str(out), "--format", "weights"]) == 0
    model, info = load_model(out.with_suffix(".pt"))  # the model file beside it, as for every graph
    weights = torch.load(out, weights_only=True)
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert "-> " + str(out) + " (weights; checkpoint" in capsys.readouterr().out
    # A format whose extra is not installed: one line saying which, and nothing written.
    missing = tmp_path / "m.x"
    assert cli.main(["export-best", "--study", "winner", "--out", str(missing), "--format", "needs-extra"]) == 1
    assert "needs the nothing extra: pip install 'resnet-search[nothing]'" in capsys.readouterr().err
    assert not missing.exists() and not missing.with_suffix(".pt").exists()


def test_report_has_plots_and_names_the_best_trial(small_study, tmp_path):
    root, env = small_study
    out = tmp_path / "report"
    search("report", "--study", "winner", "--out", str(out), env=env)
    for name in ("history", "accuracy_vs_params", "learning_curves"):
        image = Image.open(out / f"{name}.png").convert("RGB")
        pixels = np.asarray(image).astype(int)
        # Axes and text are grey; data (dots, lines, bars) is drawn in colour. An empty plot has none.
        coloured = (pixels.max(axis=2) - pixels.min(axis=2) > 60).sum()
        inked = (pixels < 200).any(axis=2).mean()
        assert image.size[0] >= 600 and coloured > 40 and inked < 0.6, (name, coloured, inked)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="winner", storage=env["SEARCH_STORAGE"])
    summary = (out / "summary.md").read_text()
    assert f"## Best trial: {study.best_trial.number}" in summary
    assert f"{study.best_trial.value:.4f}" in summary and "| pruned |" in summary
    # At most 6 trained trials: too few to rank importances, and the report says so rather than guess.
    assert re.search(r"no importances: [1-6] trained trials?, they need at least 10", summary)


def test_unwritable_outputs_are_one_line_errors(small_study, trained, unlabeled, tmp_path, env):
    root, study_env = small_study
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "best.pt").mkdir()  # a directory where the file should go: unwritable, even for root
    line = one_line_error(search("export-best", "--study", "winner", "--out", str(locked / "best.pt"),
                                 env=study_env, check=False))
    assert "cannot write" in line
    images, ids = unlabeled
    src = write_pickle(tmp_path / "in.pkl", {"data": images.reshape(len(images), 3072), "ids": ids})
    line = one_line_error(search("predict", str(trained), "--input", str(src), "--out", str(locked / "best.pt"),
                                 env=env, check=False))
    assert "best.pt" in line
