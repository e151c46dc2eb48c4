"""Training throughput: our trainer vs. the way the reports we start from trained.

    python benchmarks/train_speed.py [--device cpu|cuda] [--json FILE] [--images N] [--variants eager,compile]

Baseline (as in the reports): torchvision transforms on PIL images (RandomCrop(32, 4),
RandomHorizontalFlip, ToTensor, Normalize), DataLoader(num_workers=2, shuffle), fp32,
batch 128, SGD with momentum. Ours: objectives.train.Trainer with the same batch size and
the same augmentations, data and augmentation on the device (bf16 + channels_last on CUDA).
Both train the same architecture on the same number of real CIFAR-10 images; each side
runs one warm-up pass, then one timed pass. Prints and writes images/s and the ratio.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from objectives import build, count_params, get_preset  # noqa: E402
from objectives.data import load_cifar10  # noqa: E402
from objectives.recipe import Recipe  # noqa: E402
from objectives.prepare import prepare_data  # noqa: E402
from objectives.train import Trainer  # noqa: E402


class PilCifar(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 -> PIL image -> transform."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images_nchw.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def baseline_images_per_second(arch, data, device, batch_size: int) -> float:
    import torchvision.transforms as T
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(data.mean, data.std)])
    loader = DataLoader(PilCifar(data.train.images, data.train.labels, transform), batch_size=batch_size,
                        shuffle=True, num_workers=2, drop_last=True)
    model = build(arch).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()

    def one_pass() -> int:
        seen = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
        sync(device)
        return seen

    one_pass()  # warm-up: allocator, cuDNN
    t0 = time.perf_counter()
    seen = one_pass()
    return seen / (time.perf_counter() - t0)


def ours_images_per_second(arch, data, device, batch_size: int, compile: bool) -> tuple[float, float]:
    recipe = Recipe(batch_size=batch_size, crop_padding=4, padding_mode="zeros", flip=True, epochs=2)
    t0 = time.perf_counter()
    trainer = Trainer(arch, recipe, data, device, compile=compile)
    trainer.train_epoch()  # warm-up (and compilation when asked)
    sync(device)
    setup_and_warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.train_epoch()
    sync(device)
    return trainer.steps_per_epoch * trainer.batch_size / (time.perf_counter() - t0), setup_and_warmup


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    root = REPO / "benchmarks" / ".cache" / "cifar10-full"
    if not (root / "cifar-10-batches-py" / "test_batch").exists():
        subprocess.run([sys.executable, str(REPO.parent / "shared" / "tools" / "cifar10_batches.py"), str(root)],
                       check=True, stdout=subprocess.DEVNULL)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--images", type=int, help="training images per timed pass of ours (default: 512 on cpu, 45000 on cuda)")
    ap.add_argument("--baseline-images", type=int, help="images per timed pass of the baseline (default: as --images, "
                                                             "at most 10000: it is a rate, and the slow side)")
    ap.add_argument("--presets", default="resnet24-steroids,resnet20-he")
    ap.add_argument("--batch-size", type=int, default=128, help="baseline's and ours (default 128, as the reports)")
    ap.add_argument("--extra-batch-sizes", type=lambda t: [int(x) for x in t.split(",") if x], default=[],
                    help="also time ours at these batch sizes, e.g. 512,1024")
    ap.add_argument("--compile", action="store_true", help="same as --variants compile")
    ap.add_argument("--variants", default="eager", help="ours: eager, compile (torch.compile; compile time reported "
                                                        "apart), or both as eager,compile")
    ap.add_argument("--data-dir", help="CIFAR-10 folder (default: rebuilt from ../shared)")
    args = ap.parse_args()
    device = torch.device(args.device)
    images = args.images or (512 if device.type == "cpu" else 45_000)
    variants = ["compile"] if args.compile else args.variants.split(",")
    cifar = load_cifar10(data_dir(args.data_dir), download_missing=False)
    data = prepare_data(cifar, val_size=100, seed=0, train_limit=images)
    base_data = prepare_data(cifar, val_size=100, seed=0, train_limit=args.baseline_images or min(images, 10_000))
    results = []
    for name in args.presets.split(","):
        arch = get_preset(name)
        base = baseline_images_per_second(arch, base_data, device, args.batch_size)
        for batch_size in sorted({args.batch_size, *args.extra_batch_sizes}):
            for variant in variants:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                ours, warmup_s = ours_images_per_second(arch, data, device, batch_size, variant == "compile")
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
                row = {"preset": name, "params": count_params(arch), "images": images, "batch_size": batch_size,
                       "baseline_batch_size": args.batch_size,
                       "ours_images_per_second": round(ours, 1), "baseline_images_per_second": round(base, 1),
                       "ratio": round(ours / base, 2), "ours_setup_and_warmup_seconds": round(warmup_s, 2),
                       "ours_epoch_seconds_45k": round(45_000 / ours, 2), "compile": variant == "compile",
                       "ours_peak_gpu_memory_gib": round(peak, 2) if peak is not None else None}
                results.append(row)
                print(f"{name:<18} bs {batch_size:4d} {variant:<8} ours {ours:9.1f} img/s (45k epoch {45_000 / ours:6.2f} s, "
                      f"warm-up {warmup_s:5.1f} s)   baseline {base:9.1f} img/s   ratio {ours / base:6.2f}x", flush=True)
    out = {"benchmark": "train_speed", "device": args.device,
           "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
           "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
