"""`search`: the command line. Each command is a thin function over the public API;
a user error (ValueError and subclasses) becomes one line on stderr and exit 1."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

DEFAULT_BUDGET = 5_000_000
ARTIFACTS_HELP = ("checkpoints: a directory or s3://BUCKET/PREFIX (S3 endpoint and credentials from the AWS "
                  "variables, e.g. AWS_ENDPOINT_URL) (default: $SEARCH_ARTIFACTS, else where the study "
                  "remembers, else ./artifacts)")


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


# ---- architecture commands ----------------------------------------------------------------

def cmd_presets(args: argparse.Namespace) -> int:
    from objectives import PRESETS, count_macs, count_params
    rows = [{"name": name, "params": count_params(arch), "macs": count_macs(arch),
             "within_budget": count_params(arch) <= args.budget} for name, arch in PRESETS.items()]
    if args.json:
        print(json.dumps({"budget": args.budget, "presets": rows}, indent=2))
        return 0
    print(f"{'preset':<20} {'params':>12} {'MMACs':>9}  within {args.budget:,}")
    for r in rows:
        print(f"{r['name']:<20} {r['params']:>12,} {r['macs'] / 1e6:>9.1f}  {'yes' if r['within_budget'] else 'NO'}")
    return 0


def cmd_arch(args: argparse.Namespace) -> int:
    from objectives import ArchConfig, count_macs, count_params, get_preset
    from objectives.counting import check_budget
    if args.preset:
        arch = get_preset(args.preset)
    else:
        arch = ArchConfig.from_json(_read(args.file))
    print(json.dumps({"architecture": arch.to_dict(), "params": count_params(arch), "macs": count_macs(arch),
                      "budget": args.budget}, indent=2))
    check_budget(arch, args.budget)  # raises OverBudgetError: one line, exit 1
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from objectives.space import SearchSpace
    print(json.dumps(SearchSpace().to_dict(), indent=2))
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    from objectives.data import load_cifar10
    cifar = load_cifar10(args.data_dir)
    print(f"CIFAR-10 ready in {cifar.root}: {len(cifar.train):,} train, {len(cifar.test):,} test images")
    return 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None


# ---- study commands -----------------------------------------------------------------------

def _storage(args: argparse.Namespace, heartbeat: bool = False):
    from storage.database import make_storage, quiet_optuna
    from storage.urls import resolve_storage_url
    quiet_optuna()
    url = resolve_storage_url(args.storage)
    if heartbeat:
        return make_storage(url, heartbeat_interval=args.heartbeat, grace_period=args.grace, wait=args.db_wait)
    return make_storage(url, wait=args.db_wait)


def _definition(args: argparse.Namespace):
    import dataclasses
    from objectives.space import SearchSpace
    from search.definition import StudyDefinition
    space = SearchSpace.from_json(_read(args.space)) if args.space else SearchSpace()
    if args.epochs is not None:
        space = dataclasses.replace(space, recipe=dataclasses.replace(space.recipe, epochs=(args.epochs, args.epochs)))
    return StudyDefinition(space=space, budget=args.budget, val_size=args.val_size, seed=args.seed,
                           train_limit=args.train_limit, pruner=args.pruner, sampler=args.sampler)


def cmd_create(args: argparse.Namespace) -> int:
    from search.definition import create_study
    definition = _definition(args)
    store = None
    if args.artifacts or os.environ.get("SEARCH_ARTIFACTS"):  # checked before the study is made
        from storage.artifacts import location_of, open_artifact_store, remember_location
        store = open_artifact_store(args.artifacts)
    study = create_study(_storage(args), args.study, definition)
    if store is not None:  # remembered: workers and readers need no flag
        remember_location(study, location_of(store))
    print(f"study {study.study_name}: budget {definition.budget:,}, {definition.epochs} epochs, "
          f"val {definition.val_size}, pruner {definition.pruner}, sampler {definition.sampler}")
    return 0


def _worker_options(args: argparse.Namespace):
    from search.worker import WorkerOptions
    from storage.urls import resolve_storage_url
    return WorkerOptions(study=args.study, storage_url=resolve_storage_url(args.storage), data_dir=args.data_dir,
                         artifacts=args.artifacts, n_trials=args.n_trials, timeout=args.timeout,
                         heartbeat=args.heartbeat, grace=args.grace, db_wait=args.db_wait, compile=args.compile)


def _child_args(opts) -> list[str]:
    out = ["--study", opts.study, "--storage", opts.storage_url, "--heartbeat", str(opts.heartbeat),
           "--grace", str(opts.grace), "--db-wait", str(opts.db_wait)]
    if opts.compile:
        out.append("--compile")
    for flag, value in (("--data-dir", opts.data_dir), ("--artifacts", opts.artifacts),
                        ("--n-trials", opts.n_trials), ("--timeout", opts.timeout)):
        if value is not None:
            out += [flag, str(value)]
    return out


def cmd_worker(args: argparse.Namespace) -> int:
    from search.worker import run_slot, run_worker
    opts = _worker_options(args)
    if args.slot_device:  # a child started by a parent worker
        return run_slot(opts, args.slot_device)
    from search.definition import load_study
    storage = _storage(args)
    load_study(storage, args.study)  # unknown study: fail here, once, not in every child
    storage.engine.dispose()  # the slot processes open their own; this one holds no connection
    return run_worker(opts, args.gpus, args.per_gpu, _child_args(opts))


def cmd_run(args: argparse.Namespace) -> int:
    cmd_create(args)
    return cmd_worker(args)


def cmd_status(args: argparse.Namespace) -> int:
    from search.definition import load_study
    from search.status import format_summary, summarize
    study, _ = load_study(_storage(args), args.study)
    summary = summarize(study)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    from objectives import count_params, get_preset
    from objectives.space import arch_to_params
    from search.definition import load_study
    study, definition = load_study(_storage(args), args.study)
    arch = get_preset(args.preset)
    n = count_params(arch)
    if n > definition.budget:
        raise ValueError(f"preset {args.preset} is over this study's budget: {n:,} > {definition.budget:,}")
    try:
        params = arch_to_params(arch, definition.space.arch)
    except ValueError as e:
        raise ValueError(f"preset {args.preset} cannot be expressed in this study's space: {e}") from None
    study.enqueue_trial(params, user_attrs={"preset": args.preset}, skip_if_exists=True)
    print(f"enqueued {args.preset} ({n:,} params) in study {args.study}; its recipe is sampled")
    return 0


def cmd_export_best(args: argparse.Namespace) -> int:
    from search.definition import load_study
    from search.export import export_best, export_onnx, export_torchscript, test_accuracy
    study, _ = load_study(_storage(args), args.study)
    checkpoint = args.out if args.format == "checkpoint" else str(Path(args.out).with_suffix(".pt"))
    if checkpoint == args.out and args.format != "checkpoint":
        checkpoint = args.out + ".checkpoint.pt"
    data = export_best(study, args.artifacts, checkpoint)
    if args.format == "torchscript":
        export_torchscript(data, args.out)
    elif args.format == "onnx":
        export_onnx(data, args.out)
    m = data["metrics"]
    print(f"exported trial {data['trial']} of {data['study']}: val_acc {m['val_acc']:.4f}, "
          f"{m['params']:,} params -> {args.out}" + (f" ({args.format}; checkpoint {checkpoint})" if checkpoint != args.out else ""))
    if args.evaluate:
        acc, n = test_accuracy(data, args.data_dir, tta=data["recipe"].get("tta_flip", False))
        print(f"test accuracy: {acc:.4f} ({n:,} test images)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from search.evaluation import evaluate_file, format_evaluation
    result = evaluate_file(args.file, args.data_dir, args.tta)
    print(json.dumps(result, indent=2) if args.json else format_evaluation(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from search.predict import predict_to_csv
    n = predict_to_csv(args.file, args.input, args.out, tta=args.tta)
    print(f"wrote {n:,} predictions to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from search.definition import load_study
    from search.report import write_report
    study, definition = load_study(_storage(args), args.study)
    from search.status import best_feasible
    from storage.artifacts import model_note
    files = write_report(study, definition, args.out, model_note(study, best_feasible(study), args.artifacts))
    print(f"report of {args.study} in {args.out}: " + ", ".join(p.name for p in files))
    return 0


# ---- parser -------------------------------------------------------------------------------

def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="study storage URL: postgresql+psycopg2://USER:PW@HOST/DB or sqlite:///FILE "
                                     "(default: $SEARCH_STORAGE, else sqlite:///search.db here)")
    p.add_argument("--db-wait", type=float, default=60.0, metavar="SEC",
                   help="wait this long for the database to accept connections (default 60)")


def _add_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=_positive_int, default=DEFAULT_BUDGET, help="trainable-parameter limit (default 5,000,000)")
    p.add_argument("--epochs", type=_positive_int, help="epochs per trial (default: the space's, 20)")
    p.add_argument("--space", metavar="FILE.json",
                   help="ranges to search; `search space` prints the default to start from")
    p.add_argument("--val-size", type=_positive_int, default=5_000, help="validation images held out of train (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and of training (default 0)")
    p.add_argument("--train-limit", type=_positive_int, help="train on only this many images (smoke studies)")
    p.add_argument("--pruner", choices=("hyperband", "median", "none"), default="hyperband")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe")


def _add_worker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $SEARCH_DATA_DIR, else ./data; downloaded if missing)")
    p.add_argument("--artifacts", help=ARTIFACTS_HELP)
    p.add_argument("--gpus", default="all", help="all, none (CPU), or a list like 0,1 (default all; CPU if none visible)")
    p.add_argument("--per-gpu", type=_positive_int, default=1, help="worker processes per GPU (or CPU processes) (default 1)")
    p.add_argument("--n-trials", type=_positive_int, help="stop once the study has this many trained trials (all workers)")
    p.add_argument("--timeout", type=float, metavar="SEC", help="start no new trial after this many seconds")
    p.add_argument("--heartbeat", type=_positive_int, default=20, metavar="SEC", help="heartbeat interval (default 20)")
    p.add_argument("--grace", type=_positive_int, default=60, metavar="SEC",
                   help="a trial without heartbeat this long is failed and retried (default 60)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each trial's model: faster steps after ~40 s of compiling per new "
                        "architecture (measured on CPU), so it pays off only for long trials")
    p.add_argument("--slot-device", choices=("cpu", "cuda"), help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="search",
        description="Search ResNet architectures and training recipes for CIFAR-10 within a "
                    "parameter budget, on Optuna studies.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("presets", help="list known architectures: exact parameters, MACs, within budget?")
    s.add_argument("--budget", type=_positive_int, default=DEFAULT_BUDGET, help="trainable-parameter limit (default 5,000,000)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("arch", help="show one architecture's JSON, exact size and cost; exit 1 if over budget or invalid")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="a name from `search presets`")
    src.add_argument("--file", help="a JSON file holding an architecture (the format this command prints)")
    s.add_argument("--budget", type=_positive_int, default=DEFAULT_BUDGET, help="trainable-parameter limit (default 5,000,000)")
    s.set_defaults(func=cmd_arch)

    s = sub.add_parser("prepare-data", help="download (if missing) and validate CIFAR-10, once per data volume")
    s.add_argument("--data-dir", help="CIFAR-10 folder (default: $SEARCH_DATA_DIR, else ./data)")
    s.set_defaults(func=cmd_prepare_data)

    s = sub.add_parser("space", help="print the default search space (JSON) to edit and pass to --space")
    s.set_defaults(func=cmd_space)

    for name, func, helptext in (("create", cmd_create, "create a study (idempotent for the same definition)"),
                                 ("run", cmd_run, "create the study if missing, then work on it: the one-command path")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--study", required=True)
        _add_storage(s)
        _add_create(s)
        if name == "run":
            _add_worker(s)
        else:
            s.add_argument("--artifacts", help=ARTIFACTS_HELP + "; the study remembers it")
        s.set_defaults(func=func)

    s = sub.add_parser("worker", help="run trials of a study: one process per GPU slot")
    s.add_argument("--study", required=True)
    _add_storage(s)
    _add_worker(s)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("status", help="counts by state, best trial, trials per hour, recent failures")
    s.add_argument("--study", required=True)
    _add_storage(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("enqueue", help="queue a preset architecture as the study's next trial (warm start)")
    s.add_argument("--study", required=True)
    s.add_argument("--preset", required=True, help="a name from `search presets`")
    _add_storage(s)
    s.set_defaults(func=cmd_enqueue)

    s = sub.add_parser("export-best", help="write the best trial's model to one file loadable with plain PyTorch")
    s.add_argument("--study", required=True)
    s.add_argument("--out", required=True, help="file to write (torch.load(FILE, weights_only=True) reads it)")
    _add_storage(s)
    s.add_argument("--artifacts", help=ARTIFACTS_HELP)
    s.add_argument("--evaluate", action="store_true", help="also report test-set accuracy")
    s.add_argument("--data-dir", help="CIFAR-10 folder for --evaluate")
    s.add_argument("--format", choices=("checkpoint", "torchscript", "onnx"), default="checkpoint",
                   help="checkpoint: torch.load(FILE, weights_only=True) dict; torchscript/onnx: a graph that runs "
                        "without this package, input float32 N x 3 x 32 x 32 pixels in [0, 1], output logits "
                        "(the checkpoint is written beside it as .pt)")
    s.set_defaults(func=cmd_export_best)

    s = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a model file")
    s.add_argument("file", help="a file written by `search export-best`")
    s.add_argument("--data-dir", help="CIFAR-10 folder (default: $SEARCH_DATA_DIR, else ./data)")
    s.add_argument("--tta", action="store_true", help="average logits over each image and its mirror")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="predict classes of unlabeled images into a competition CSV (ID,Labels)",
                       description="Input: a pickle holding a dict with 'data' and 'ids' (N x 3072 channel-planar "
                                   "uint8 as in the CIFAR batches, or N x 32 x 32 x 3 uint8), or a folder of 32x32 "
                                   "PNG/JPEG files (file name without extension as ID). Pickles are loaded with a "
                                   "restricted unpickler that admits numpy arrays, lists, dicts, strings and "
                                   "numbers only: a file cannot run code when read. Output: CSV with header "
                                   "ID,Labels and labels 0-9 in CIFAR-10 class order.")
    s.add_argument("file", help="a file written by `search export-best`")
    s.add_argument("--input", required=True, help="pickle file or image folder")
    s.add_argument("--out", required=True, help="CSV to write")
    s.add_argument("--tta", action="store_true", help="average logits over each image and its mirror")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("report", help="PNG plots and a Markdown summary of a study")
    s.add_argument("--study", required=True)
    s.add_argument("--out", required=True, help="folder to write into")
    _add_storage(s)
    s.add_argument("--artifacts", help=ARTIFACTS_HELP)
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ValueError as e:
        print(f"search {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an output path that cannot be written, a full disk, ...
        print(f"search {args.command}: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
