"""Resume-checkpoint bytes and S3 requests per trial, before and after (issue 22 item 4).

    python benchmarks/checkpoint_size.py [--epochs 10] [--every 1 5] [--no-s3] [--json OUT]

No training: the 4,935,242-parameter ResNet-24 preset is built in a real Trainer, one step on
random images gives the optimizer (and EMA) their state, and the epoch loop is replayed with
the objective's own checkpoint rule (`search.objective.checkpoint_due`) and upload/remove
calls (`storage.artifacts`) into a real S3 endpoint (moto in server mode, as the tests run it),
counting every HTTP request boto3 sends. "before" is the checkpoint as it was (resume-v1: the
best weights in every file, a file every epoch); "after" is resume-v2 with --checkpoint-every K.
Two validation curves bound the outcome: `improving` (every epoch is the best so far, the
usual shape under a one-cycle schedule) and `plateau` (the best epoch is the first one, so
every later file must carry its weights). The model.pt at the end is counted in the totals.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
import torch  # noqa: E402

from objectives.checkpoint import model_file  # noqa: E402
from objectives.counting import count_params  # noqa: E402
from objectives.data import Split  # noqa: E402
from objectives.prepare import TrainData  # noqa: E402
from objectives.presets import get_preset  # noqa: E402
from objectives.recipe import Recipe  # noqa: E402
from objectives.train import Trainer  # noqa: E402
from search.objective import checkpoint_due  # noqa: E402
from storage.artifacts import remove_artifact, upload_torch  # noqa: E402

RECIPES = {  # the finding's two ends: 59 MB (SGD, no EMA) and 99 MB (Adam + EMA) per file
    "sgd": dict(optimizer="sgd_nesterov", ema_decay=0.0),
    "adam_ema": dict(optimizer="adam", ema_decay=0.99),
}
CURVES = ("improving", "plateau")


def trainer_with_state(arch, recipe: Recipe) -> Trainer:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))
    data = TrainData(Split(images, labels), Split(images[:0], labels[:0]), (0.5,) * 3, (0.25,) * 3)
    trainer = Trainer(arch, recipe, data, seed=0)
    trainer.train_epoch()  # one step: momentum / Adam moments and the EMA hold real tensors
    return trainer


def v1_checkpoint(trainer: Trainer) -> dict:
    """The checkpoint as resume-v1 wrote it: best_state in every file."""
    ckpt = {**trainer.checkpoint(), "format": "resnet-search/resume-v1", "best_state": trainer.best_state}
    del ckpt["best_is_current"]
    return ckpt


def nbytes(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def replay(trainer: Trainer, curve: str, epochs: int, every: int, v1: bool, store=None, counter=None) -> dict:
    """One trial's checkpoint traffic: per-epoch file sizes, total bytes, files, S3 requests."""
    study = optuna.create_study(direction="maximize")  # in memory: only the artifact rows go here
    trial = study.ask()
    sizes, previous, saved = {}, None, 0
    requests_before = counter["n"] if counter else 0
    for epoch in range(1, epochs + 1):
        trainer.epoch = epoch
        if curve == "improving" or epoch == 1:
            trainer.best_epoch, trainer.best_state = epoch, trainer.eval_state()
        if checkpoint_due(epoch, saved, every, epochs, stopping=False):
            saved = epoch
            ckpt = v1_checkpoint(trainer) if v1 else trainer.checkpoint()
            sizes[epoch] = nbytes(ckpt)
            if store is not None:
                current = upload_torch(store, trial, ckpt, f"resume-epoch{epoch}.pt", study._storage)
                if previous:
                    remove_artifact(store, study._storage, trial._trial_id, previous)
                previous = current
    model = model_file(trainer.arch, trainer.recipe.to_dict(), trainer.best_state, (0.5,) * 3, (0.25,) * 3,
                       {"val_acc": 0.9, "best_epoch": trainer.best_epoch})
    model_bytes = nbytes(model)
    if store is not None:
        upload_torch(store, trial, model, "model.pt", study._storage)
        if previous:
            remove_artifact(store, study._storage, trial._trial_id, previous)
    out = {"checkpoint_bytes_by_epoch": sizes, "checkpoints": len(sizes), "model_bytes": model_bytes,
           "uploaded_bytes": sum(sizes.values()) + model_bytes}
    if counter is not None:
        out["s3_requests"] = counter["n"] - requests_before
    return out


def open_s3():
    """A moto S3 server, a store on it, and a counter of the HTTP requests boto3 sends it."""
    import boto3
    from optuna.artifacts import Boto3ArtifactStore
    from tests.fleet_servers import S3Server
    server = S3Server().start("bench")
    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    counter = {"n": 0}
    client.meta.events.register("before-send.s3", lambda **kw: counter.__setitem__("n", counter["n"] + 1))
    return server, Boto3ArtifactStore("bench", client=client), counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--every", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--no-s3", action="store_true", help="sizes only, no S3 server")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "checkpoint_size.json"))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arch = get_preset("resnet24-steroids")
    server, store, counter = (None, None, None) if args.no_s3 else open_s3()
    started = time.perf_counter()
    runs = []
    try:
        for name, fields in RECIPES.items():
            trainer = trainer_with_state(arch, Recipe(epochs=args.epochs, batch_size=64, **fields))
            for curve in CURVES:
                before = replay(trainer, curve, args.epochs, 1, True, store, counter)
                runs.append({"recipe": name, "curve": curve, "variant": "before (v1, every epoch)", **before})
                for every in args.every:
                    after = replay(trainer, curve, args.epochs, every, False, store, counter)
                    after["bytes_vs_before"] = round(after["uploaded_bytes"] / before["uploaded_bytes"], 3)
                    runs.append({"recipe": name, "curve": curve, "variant": f"after (v2, every {every})", **after})
                    print(f"{name:9s} {curve:9s} every {every}: {after['uploaded_bytes'] / 1e6:7.1f} MB vs "
                          f"{before['uploaded_bytes'] / 1e6:7.1f} MB before ({after['bytes_vs_before']:.2f}x)"
                          + (f", S3 requests {after['s3_requests']} vs {before['s3_requests']}" if counter else ""),
                          flush=True)
    finally:
        if server is not None:
            server.stop()
    result = {"benchmark": "checkpoint_size", "model": "resnet24-steroids", "params": count_params(arch),
              "epochs": args.epochs, "s3": "moto server, boto3 defaults (multipart above 8 MB, 8 MB parts)"
              if counter else None, "seconds": round(time.perf_counter() - started, 1),
              "load_average": os.getloadavg(), "host": platform.node(), "torch": torch.__version__, "runs": runs}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json} (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
