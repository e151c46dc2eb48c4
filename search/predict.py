"""`search predict`: class predictions for unlabeled images, written as the course
competitions' CSV (`ID,Labels`, integer labels 0-9 in CIFAR-10 class order).

Inputs: a pickled dict with `data` and `ids` (keys as bytes or str), in either layout seen
in the wild, told apart by shape:
  - N x 3072 uint8, channel-planar like the CIFAR batches (R plane, then G, then B);
  - N x 32 x 32 x 3 uint8, height-width-channel.
Or a folder of 32x32 PNG/JPEG images, each file's name without extension as its ID.
Pickles are read with a restricted unpickler (numpy arrays, lists, dicts, strings and
numbers only), so a file cannot run code when loaded.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from objectives.inference import load_classifier, predict
from objectives.safe_pickle import BadPickle, UnsafePickleError, load_dict

from .progress import progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _as_str(x) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if isinstance(x, np.generic):
        x = x.item()
    return str(x)


def read_pickle(path: Path) -> tuple[list[str], torch.Tensor]:
    try:
        obj = load_dict(path.read_bytes())
    except UnsafePickleError as e:
        raise ValueError(f"{path}: {e}") from e
    except BadPickle as e:
        raise ValueError(f"{path}: not a readable pickle of a dict with 'data' and 'ids' ({e})") from e
    missing = [k for k in ("data", "ids") if k not in obj]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)} (has: {', '.join(sorted(obj)) or 'none'})")
    data = np.asarray(obj["data"])
    raw_ids = obj["ids"]
    if isinstance(raw_ids, np.ndarray):
        raw_ids = raw_ids.reshape(-1).tolist()
    if not isinstance(raw_ids, (list, tuple)):
        raise ValueError(f"{path}: 'ids' must be a list or array, got {type(raw_ids).__name__}")
    ids = [_as_str(i) for i in raw_ids]
    if data.dtype != np.uint8:
        raise ValueError(f"{path}: 'data' must be uint8 pixels, got {data.dtype}")
    if data.ndim == 2 and data.shape[1] == 3072:
        images = data.reshape(-1, 3, 32, 32)                   # channel-planar rows, as CIFAR batches
    elif data.ndim == 4 and data.shape[1:] == (32, 32, 3):
        images = data.transpose(0, 3, 1, 2)                    # height x width x channel
    else:
        raise ValueError(f"{path}: 'data' has shape {data.shape}; expected N x 3072 (channel-planar) "
                         f"or N x 32 x 32 x 3 (HWC)")
    if len(ids) != len(images):
        raise ValueError(f"{path}: {len(images)} images but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: ids are not unique")
    return ids, torch.from_numpy(np.ascontiguousarray(images))


def read_folder(path: Path) -> tuple[list[str], torch.Tensor]:
    from PIL import Image, UnidentifiedImageError
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no .png/.jpg images in the folder")
    ids, images = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{f}: not a readable image ({e})") from e
        if arr.shape != (32, 32, 3):
            raise ValueError(f"{f}: images must be 32x32, got {arr.shape[1]}x{arr.shape[0]}")
        ids.append(f.stem)
        images.append(arr.transpose(2, 0, 1))
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: two files share a name without extension")
    return ids, torch.from_numpy(np.stack(images))


def read_inputs(path: str) -> tuple[list[str], torch.Tensor]:
    p = Path(path)
    if p.is_dir():
        return read_folder(p)
    if not p.is_file():
        raise ValueError(f"{path}: no such file or folder")
    ids, images = read_pickle(p)
    if not ids:  # a header-only CSV would look like a finished job
        raise ValueError(f"{path}: holds no images to predict")
    return ids, images


def predict_to_csv(model_path: str, input_path: str, out: str, tta: bool | None = None, force: bool = False
                   ) -> tuple[int, bool, str]:
    """Predictions written to `out`: (how many, flip averaging used, why: asked or the recipe's)."""
    from core.options import output_file
    # Refuse an output that cannot be written before predicting, not after (one line, nothing lost):
    # its folder must exist, and an existing file is replaced only with `force`.
    output_file(out, force, "CSV")
    ids, images = read_inputs(input_path)
    from .threads import inference_device
    device = inference_device()
    classifier, info = load_classifier(model_path, device)
    from .evaluation import flip_averaging
    tta, why = flip_averaging(info, tta)  # the predictions of the accuracy `evaluate` reports
    with progress(len(ids), "predicting") as advance:
        predictions = predict(classifier, images, device, tta=tta, advance=advance)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Labels"])
        w.writerows(zip(ids, predictions.tolist()))
    return len(ids), tta, why
