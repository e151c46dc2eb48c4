"""`search evaluate`: test accuracy, per-class accuracy and the confusion matrix of a model file."""
from __future__ import annotations

from typing import Any

import torch

from objectives.data import CLASSES, load_test_split
from objectives.inference import evaluate, load_classifier

from .progress import progress


def flip_averaging(info: dict[str, Any], tta: bool | None) -> tuple[bool, str]:
    """Whether to average each test image with its mirror, and why: as asked, else as the recipe
    the model was trained with evaluated it (so `evaluate` and `export-best --evaluate` agree)."""
    if tta is not None:
        return tta, "as asked"
    return bool((info.get("recipe") or {}).get("tta_flip", False)), "as its recipe"


def describe_flip(on: bool, why: str) -> str:
    return f"flip averaging {'on' if on else 'off'} ({why})"


def evaluate_file(path: str, data_dir: str | None, tta: bool | None) -> dict[str, Any]:
    from .threads import inference_device
    device = inference_device()
    classifier, info = load_classifier(path, device)
    tta, why = flip_averaging(info, tta)
    test = load_test_split(data_dir)
    with progress(len(test), "evaluating on the test set") as advance:
        result = evaluate(classifier, test, device, tta=tta, advance=advance)
    n = len(CLASSES)
    confusion = torch.zeros(n, n, dtype=torch.long)
    confusion.index_put_((test.labels, result.predictions), torch.ones_like(test.labels), accumulate=True)
    per_class = (confusion.diag().double() / confusion.sum(1).clamp(min=1)).tolist()
    return {"file": str(path), "study": info.get("study"), "trial": info.get("trial"), "tta": tta, "tta_why": why,
            "images": len(test), "accuracy": result.accuracy, "loss": result.loss,
            "per_class_accuracy": dict(zip(CLASSES, per_class)),
            "classes": list(CLASSES), "confusion_matrix": confusion.tolist()}


def format_evaluation(r: dict[str, Any]) -> str:
    short = [c[:5] for c in r["classes"]]
    lines = [f"{r['file']}: test accuracy {r['accuracy']:.4f} on {r['images']:,} test images, "
             f"{describe_flip(r['tta'], r['tta_why'])}, loss {r['loss']:.4f}", "",
             "per class: " + ", ".join(f"{c} {a:.3f}" for c, a in r["per_class_accuracy"].items()), "",
             "confusion matrix (rows: true class, columns: predicted)",
             f"{'':>11}" + "".join(f"{s:>7}" for s in short)]
    for name, row in zip(r["classes"], r["confusion_matrix"]):
        lines.append(f"{name:>11}" + "".join(f"{v:>7}" for v in row))
    return "\n".join(lines)
