"""Time to accuracy: seconds and epochs until a model of our space reaches a test accuracy.

    python benchmarks/time_to_accuracy.py [--runs FILE.json] [--json OUT] [--data-dir D]

Each run trains one architecture (a preset name or an architecture dict) with one recipe
on all 50,000 training images with our Trainer, and measures test accuracy (with the
recipe's flip TTA) after every epoch. Reported per run: the final test accuracy (the
honest figure: the whole schedule was fixed in advance), the cumulative training seconds
(test evaluation excluded), and the first epoch at which 94% and 95% were crossed (read
off a test curve, so an upper bound on speed, not a selection). Anchors on an A100:
airbench94 (1.97M params) 94.01% in 3.1 s; airbench95 (4.6M) 95.01% in 10.4 s, 15 epochs.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from objectives import ArchConfig, count_macs, count_params, get_preset  # noqa: E402
from objectives.data import load_cifar10  # noqa: E402
from objectives.recipe import Recipe  # noqa: E402
from objectives.prepare import TrainData, channel_stats  # noqa: E402
from objectives.train import Trainer  # noqa: E402

# airbench-style: large batch, Nesterov SGD, label smoothing, one-cycle, flip TTA.
FAST = {"optimizer": "sgd_nesterov", "lr": 0.4, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle",
        "warmup_fraction": 0.25, "batch_size": 512, "crop_padding": 4, "padding_mode": "reflect", "flip": True,
        "cutout": 8, "label_smoothing": 0.2, "tta_flip": True}
DEFAULT_RUNS = [
    {"name": "resnet9-kuangliu-e20", "arch": "resnet9-kuangliu", "recipe": {**FAST, "epochs": 20}},
    {"name": "resnet24-steroids-e40", "arch": "resnet24-steroids", "recipe": {**FAST, "epochs": 40, "cutout": 12}},
]
TARGETS = (0.94, 0.95)


def one_run(spec: dict, data: TrainData, device: str, seed: int) -> dict:
    arch = get_preset(spec["arch"]) if isinstance(spec["arch"], str) else ArchConfig.from_dict(spec["arch"])
    recipe = Recipe.from_dict(spec["recipe"])
    trainer = Trainer(arch, recipe, data, device, seed=seed)
    curve, train_seconds = [], 0.0

    def on_epoch(epoch: int, m: dict) -> None:
        nonlocal train_seconds
        train_seconds += m["train_seconds"]
        curve.append({"epoch": epoch, "test_acc": round(m["val_acc"], 4), "train_seconds": round(train_seconds, 2),
                      "train_loss": round(m["train_loss"], 4)})
        print(f"  {spec['name']} epoch {epoch}/{recipe.epochs}: test {m['val_acc']:.4f}  {train_seconds:7.1f} s",
              flush=True)

    t0 = time.perf_counter()
    result = trainer.run(on_epoch)
    wall = time.perf_counter() - t0
    row = {"name": spec["name"], "params": count_params(arch), "macs": count_macs(arch),
           "architecture": arch.to_dict(), "recipe": recipe.to_dict(), "status": result.status,
           "final_test_acc": curve[-1]["test_acc"] if curve else None,
           "train_seconds": round(train_seconds, 1), "wall_seconds": round(wall, 1), "curve": curve}
    for target in TARGETS:
        hit = next((c for c in curve if c["test_acc"] >= target), None)
        key = f"first_{round(target * 100)}"
        row[key] = {"epoch": hit["epoch"], "train_seconds": hit["train_seconds"]} if hit else None
    del trainer
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", help="JSON list of {name, arch (preset name or dict), recipe}")
    ap.add_argument("--data-dir", required=True, help="CIFAR-10 folder")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    runs = json.loads(Path(args.runs).read_text()) if args.runs else DEFAULT_RUNS
    cifar = load_cifar10(args.data_dir, download_missing=False)
    mean, std = channel_stats(cifar.train.images)
    data = TrainData(cifar.train, cifar.test, mean, std).to(args.device)
    rows = []
    out = {"benchmark": "time_to_accuracy", "device": args.device,
           "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.machine(),
           "torch": torch.__version__, "train_images": len(cifar.train), "test_images": len(cifar.test), "runs": rows}
    for spec in runs:
        rows.append(one_run(spec, data, args.device, args.seed))
        r = rows[-1]
        print(f"{r['name']}: {r['params']:,} params, final test {r['final_test_acc']}, {r['train_seconds']} s train, "
              f"94%: {r['first_94']}, 95%: {r['first_95']}", flush=True)
        if args.json:  # after every run, so a cut-off session keeps what finished
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps([{k: v for k, v in r.items() if k not in ("curve", "architecture", "recipe")} for r in rows], indent=2))


if __name__ == "__main__":
    main()
