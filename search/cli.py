"""`search`: the command line. Each command is a thin function over the public API;
a user error (ValueError and subclasses) becomes one line on stderr and exit 1."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from core.options import add_flags, int_in, positive_int, seconds
from core.settings import (ARTIFACTS_HELP, DASHBOARD_PORT, DATA_DIR_DEFAULT, DEFAULT_BUDGET,
                             DEFAULT_SEED, DEFAULT_VAL_SIZE, EXIT_TRANSIENT, EXIT_USER_ERROR, FINALIZE_SEEDS, FINALIZE_TOP, INTERACTIVE_DB_WAIT,
                             MAX_DB_WAIT, STORAGE_DEFAULT, WAITING_COMMANDS, WORKER_DB_WAIT, WorkerOptions, debug,
                             resolve)
from search.progress import plural
from search.strategies import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS, SAMPLERS


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the usage block buries the reason); `--help` shows the usage."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
        arch = ArchConfig.from_json(_read(args.file), unwrap=True)
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
    """A space or architecture file's text; one larger than any such file is refused unread."""
    from objectives.checks import MAX_JSON_CHARS
    try:
        with open(path, "rb") as f:
            data = f.read(4 * MAX_JSON_CHARS + 1)  # at most 4 bytes a character in UTF-8
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) > 4 * MAX_JSON_CHARS:
        raise ValueError(f"{path}: too large for a space or architecture file (at most {MAX_JSON_CHARS:,} characters)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start:,})") from None


# ---- study commands -----------------------------------------------------------------------

def _storage(args: argparse.Namespace, heartbeat: bool = False, existing: bool = False):
    """The study storage; with `existing` (commands that read a study), a missing or empty
    database is one line, never created."""
    from storage.database import make_storage, quiet_optuna
    quiet_optuna()
    if heartbeat:
        return make_storage(args.storage, heartbeat_interval=args.heartbeat, grace_period=args.grace,
                            wait=args.db_wait, existing=existing)
    return make_storage(args.storage, wait=args.db_wait, existing=existing)


def _definition(args: argparse.Namespace):
    from search.api import short_run_definition
    return short_run_definition(_read(args.space) if args.space else None, args.budget, args.epochs, args.val_size,
                                args.seed, args.train_limit, args.pruner, args.sampler, args.max_macs)


def cmd_create(args: argparse.Namespace, storage=None) -> int:
    from search.api import create
    definition = _definition(args)
    # --artifacts: flag or $SEARCH_ARTIFACTS (settings.resolve), checked before the study is made
    study = create(storage or _storage(args), args.study, definition, args.artifacts)
    print(f"study {study.study_name}: budget {definition.budget:,}, {plural(definition.epochs, 'epoch')}, "
          f"val {definition.val_size}, seed {definition.seed}, pruner {definition.pruner}, sampler {definition.sampler}",
          flush=True)  # a log or pipe sees it now, not after the first trial
    return 0


def _worker_options(args: argparse.Namespace):
    """The worker's options and slots, refused if bad before anything is touched."""
    from search.api import check_worker_options
    opts = WorkerOptions.from_args(args)
    return opts, check_worker_options(opts)


def cmd_worker(args: argparse.Namespace) -> int:
    opts, plan = _worker_options(args)
    from search.api import work
    # a worker joins a study that exists: a mistyped path or URL creates no database
    return work(_storage(args, heartbeat=True, existing=True), args.study, opts, plan)


def cmd_run(args: argparse.Namespace) -> int:
    opts, plan = _worker_options(args)  # bad worker flags: refuse before the study is created
    from objectives.data import ensure_cifar10
    from search.api import is_final_study, work
    ensure_cifar10(opts.data_dir)  # before the study exists: a failed first run leaves nothing behind
    storage = _storage(args, heartbeat=True)  # one storage (and one database wait) for create and work
    if not is_final_study(storage, args.study):  # a finalize study exists already, with its own definition
        cmd_create(args, storage)
    return work(storage, args.study, opts, plan, data_checked=True)


def cmd_status(args: argparse.Namespace) -> int:
    storage = _storage(args, existing=True)  # first: an unreachable database answers before the heavy imports
    from search.api import status
    from search.status import format_summary
    from search.tables import final_text
    summary, final = status(storage, args.study)
    print(json.dumps(summary, indent=2) if args.json else
          format_summary(summary) + ("\n" + final_text(final) if final else ""))
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    storage = _storage(args, existing=True)  # first: an unreachable database answers before the heavy imports
    from search.api import enqueue_preset
    e = enqueue_preset(storage, args.study, args.preset, args.with_recipe, args.outside_space)
    r = e.recipe
    print(f"enqueued {e.preset} ({e.params:,} params) in study {args.study}; " +
          (f"its published recipe: {r['optimizer']} lr {r['lr']:g}, {r['schedule']}, {r['epochs']} epochs, batch "
           f"{r['batch_size']} (not pruned)" if r else "its recipe is sampled"))
    return 0


def cmd_export_best(args: argparse.Namespace) -> int:
    storage = _storage(args, existing=True)  # first: an unreachable database answers before the heavy imports
    from search.api import export
    from core.trials import accuracy_label
    result = export(storage, args.study, args.out, args.format, args.artifacts, args.final, args.max_params,
                    args.max_macs, args.force)
    data, m = result.data, result.data["metrics"]
    flip = bool(data["recipe"].get("tta_flip", False))  # the file's recipe: what its search and final run used
    val = accuracy_label("val", m["val_acc"], flip) if m.get("val_acc") is not None else "no validation split"
    print(f"exported trial {data['trial']} of {data['study']}: {val}, {m['params']:,} params -> {args.out}"
          + (f" ({args.format}; checkpoint {result.checkpoint})" if result.checkpoint != Path(args.out) else ""))
    if "final" in data:
        f = data["final"]
        print(f"  final run of trial {f['source_trial']} of {f['source_study']} (search rank {f['search_rank']}), seed "
              f"{f['seed']}, {plural(f['training']['epochs'], 'epoch')} on {plural(f['training']['train_images'], 'image')}; "
              f"{accuracy_label('test', m['test_acc'], flip)}; chosen by {result.chosen_by}")
    if args.evaluate:
        from search.evaluation import describe_flip, flip_averaging
        from search.export import test_accuracy
        tta, why = flip_averaging(data, args.tta)
        acc, n = test_accuracy(data, args.data_dir, tta=tta)
        print(f"test accuracy: {acc:.4f} ({n:,} test images, {describe_flip(tta, why)})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from search.evaluation import evaluate_file, format_evaluation
    result = evaluate_file(args.file, args.data_dir, args.tta)
    print(json.dumps(result, indent=2) if args.json else format_evaluation(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from search.predict import predict_to_csv
    from search.evaluation import describe_flip
    n, tta, why = predict_to_csv(args.file, args.input, args.out, tta=args.tta, force=args.force)
    print(f"wrote {n:,} predictions to {args.out} ({describe_flip(tta, why)})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from core.options import output_folder
    output_folder(args.out, args.force, "summary.md", "report")  # a mistyped parent folder is an error
    storage = _storage(args, existing=True)  # first: an unreachable database answers before the heavy imports
    from search.api import report
    files = report(storage, args.study, args.out, args.artifacts)
    print(f"report of {args.study} in {args.out}: " + ", ".join(p.name for p in files))
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    from search.api import finalize
    from search.finalize import EPOCHS_FACTOR
    names = None
    if args.baselines is not None:
        from search.baselines import parse_names
        names = parse_names(args.baselines)  # a typo is refused before the storage is touched
    study, enqueued, over_budget = finalize(_storage(args, existing=True), args.study, args.top, args.epochs,
                                            args.seeds, args.full_train, args.final_study, names)
    data = "all training images (no validation split)" if args.full_train else "the search's train split (validation kept)"
    if not enqueued:
        print(f"study {study.study_name}: every run was enqueued before; train with "
              f"`search worker --study {study.study_name}`")
        return 0
    configs = sorted({(e["search_rank"], e["source_trial"], e["epochs"]) for e in enqueued if not e.get("baseline")})
    hand = sorted({(e["baseline"], e["epochs"], e["narrowed_from"]) for e in enqueued if e.get("baseline")})
    print(f"study {study.study_name}: enqueued {plural(len(enqueued), 'run')} ({plural(len(configs) + len(hand), 'configuration')}"
          f" x up to {plural(args.seeds, 'seed')}) on {data}" +
          ("" if args.epochs else f"; epochs: {EPOCHS_FACTOR} x the search's, or a published recipe's own"))
    for rank, trial, epochs in configs:
        print(f"  search rank {rank}: trial {trial}, {plural(epochs, 'epoch')}")
    for name, epochs, narrowed_from in hand:
        print(f"  baseline {name} with its published recipe, {plural(epochs, 'epoch')}" +
              (f" (narrowed from {narrowed_from:,} parameters to the budget)" if narrowed_from else ""))
    for name in over_budget:
        print(f"  baseline {name}: not trained, over the budget even at the narrowest widths")
    print(f"train them with `search worker --study {study.study_name}` (any number of workers and hosts)")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from search.api import pareto
    from search.pareto import format_front
    rows = pareto(_storage(args, existing=True), args.study)
    print(json.dumps(rows, indent=2) if args.json else format_front(rows, args.study))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from search.api import dashboard
    from storage.dashboard import check_port, serve
    storage = _storage(args, existing=True)
    store, page = dashboard(storage, args.study, args.artifacts)
    check_port(args.host, args.port)  # a port in use is one line, before anything is printed
    what = f"study {args.study}" if args.study else "every study of the storage"
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"optuna-dashboard for {what}: http://{shown}:{args.port}/{page} (no authentication; Ctrl-C stops it)",
          flush=True)
    serve(storage, store, args.host, args.port, args.verbose)
    return 0


# ---- parser -------------------------------------------------------------------------------

def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="study storage URL: postgresql+psycopg2://USER:PW@HOST/DB or sqlite:///FILE "
                                     f"(default: {STORAGE_DEFAULT} here)")
    p.add_argument("--db-wait", type=seconds(0, MAX_DB_WAIT), default=None, metavar="SEC",
                   help=f"wait this long for the database to accept connections (default: "
                        f"{', '.join(WAITING_COMMANDS[:-1])} and {WAITING_COMMANDS[-1]} {WORKER_DB_WAIT:g}, "
                        f"workers through outages too; other commands {INTERACTIVE_DB_WAIT:g})")


def _add_create(p: argparse.ArgumentParser) -> None:
    _add_budget(p)
    p.add_argument("--max-macs", type=positive_int, metavar="M",
                   help="compute budget: multiply-accumulates per image a model may cost, narrowed to fit like the "
                        "parameter budget (e.g. 25000000 where trials train on a CPU) (default: no limit)")
    p.add_argument("--epochs", type=positive_int, help="epochs per trial (default: the space's, 20)")
    p.add_argument("--space", metavar="FILE.json",
                   help="ranges to search; `search space` prints the default to start from")
    p.add_argument("--val-size", type=positive_int, default=DEFAULT_VAL_SIZE,
                   help="validation images held out of train (default %(default)s)")
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=DEFAULT_SEED,
                   help="seed of the validation split and of training (default %(default)s)")
    p.add_argument("--train-limit", type=positive_int,
                   help="train on only this many images, for quick studies (default: all but the validation images)")
    p.add_argument("--pruner", choices=tuple(PRUNERS), default=DEFAULT_PRUNER,
                   help="stops unpromising trials early, judged on validation accuracy per epoch (default %(default)s)")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default=DEFAULT_SAMPLER,
                   help="how configs are drawn: tpe learns from finished trials, random does not (default %(default)s)")


def _add_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=positive_int, default=DEFAULT_BUDGET,
                   help=f"trainable-parameter limit (default {DEFAULT_BUDGET:,})")


def _add_worker(p: argparse.ArgumentParser) -> None:
    add_flags(p, WorkerOptions)


TTA_HELP = ("average logits over each test image and its mirror, or not (default: as the model's recipe did in "
            "the search, its tta_flip; the line printed says which)")

EXAMPLES = """examples:
  search run --study demo --space examples/demo-space.json --budget 250000 --max-macs 12000000 \\
             --epochs 2 --train-limit 8000 --val-size 1000 --n-trials 4 --timeout 240
                               a small search on this machine (a few minutes on a CPU)
  search status --study demo   progress, time to the target, the best trial
  search dashboard --study demo
                               the study in optuna-dashboard on http://127.0.0.1:8080
  search export-best --study demo --out best.pt --evaluate
                               the winner as one file, with its test accuracy
  search run --study s1 --n-trials 200
                               a real search: 5M parameters, 20 epochs, all training images

`search COMMAND --help` describes each command's options."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("resnet-search")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="search",
        description="Search ResNet architectures and training recipes for CIFAR-10 within a "
                    "parameter budget, on Optuna studies.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s (resnet-search) {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("presets", help="list known architectures: exact parameters, MACs, within budget?")
    _add_budget(s)
    s.add_argument("--json", action="store_true", help="machine-readable output (default: a table)")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("arch", help="show one architecture's JSON, exact size and cost; exit 1 if over budget or invalid")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="a name from `search presets` (this or --file is required)")
    src.add_argument("--file", help="a JSON file holding an architecture, the format this command prints "
                                    "(this or --preset is required)")
    _add_budget(s)
    s.set_defaults(func=cmd_arch)

    s = sub.add_parser("prepare-data", help="download (if missing) and validate CIFAR-10, once per data volume")
    s.add_argument("--data-dir", help=f"CIFAR-10 folder (default: {DATA_DIR_DEFAULT})")
    s.set_defaults(func=cmd_prepare_data)

    s = sub.add_parser("space", help="print the default search space (JSON) to edit and pass to --space")
    s.set_defaults(func=cmd_space)

    for name, func, helptext in (("create", cmd_create, "create a study (idempotent for the same definition)"),
                                 ("run", cmd_run, "create the study if missing, then work on it: the one-command path")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--study", required=True, help="study name (required)")
        _add_storage(s)
        _add_create(s)
        if name == "run":
            _add_worker(s)
        else:
            s.add_argument("--artifacts", help=ARTIFACTS_HELP + "; the study remembers it")
        s.set_defaults(func=func)

    s = sub.add_parser("worker", help="run trials of a study: one process per GPU slot")
    s.add_argument("--study", required=True, help="study name (required)")
    _add_storage(s)
    _add_worker(s)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("status", help="counts by state, best trial, trials per hour, recent failures")
    s.add_argument("--study", required=True, help="study name (required)")
    _add_storage(s)
    s.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("enqueue", help="queue a preset architecture as the study's next trial (warm start)")
    s.add_argument("--study", required=True, help="study name (required)")
    s.add_argument("--preset", required=True, help="a name from `search presets`")
    s.add_argument("--with-recipe", action="store_true",
                   help="train it with the recipe its report published (epochs included, never pruned) "
                        "instead of a sampled one; see objectives/published.py (default: a sampled recipe)")
    s.add_argument("--outside-space", action="store_true",
                   help="with --with-recipe: enqueue the published recipe even where the study's space cannot "
                        "produce its values; the trial lists them in its user attribute outside_space "
                        "(default: refuse such a recipe)")
    _add_storage(s)
    s.set_defaults(func=cmd_enqueue)

    s = sub.add_parser("export-best", help="write the best trial's model to one file loadable with plain PyTorch")
    s.add_argument("--study", required=True, help="study name (required)")
    s.add_argument("--out", required=True, help="file to write, in a folder that exists "
                                                "(torch.load(FILE, weights_only=True) reads it)")
    s.add_argument("--force", action="store_true", help="replace --out (and the model file beside a graph) if it "
                                                        "exists (default: refuse)")
    _add_storage(s)
    s.add_argument("--artifacts", help=ARTIFACTS_HELP)
    s.add_argument("--evaluate", action="store_true", help="also report test-set accuracy (default: off)")
    s.add_argument("--data-dir", help=f"CIFAR-10 folder for --evaluate (default: {DATA_DIR_DEFAULT})")
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="with --evaluate: " + TTA_HELP)
    from search.export import DEFAULT_FORMAT, EXPORT_FORMATS, format_help  # no heavy imports: see its docstring
    s.add_argument("--format", choices=tuple(EXPORT_FORMATS), default=DEFAULT_FORMAT, help=format_help())
    s.add_argument("--final", action="store_true",
                   help="export the best finalized model (of STUDY.final, or of STUDY when it is a finalize study) "
                        "(default: off)")
    s.add_argument("--max-params", type=positive_int, metavar="N",
                   help="the best trial with at most N parameters (default: no limit)")
    s.add_argument("--max-macs", type=positive_int, metavar="M",
                   help="the best trial with at most M MACs per image (default: no limit)")
    s.set_defaults(func=cmd_export_best)

    s = sub.add_parser("finalize", help="retrain the top trials longer, several seeds each, as trials of STUDY.final",
                       description="Enqueue the final runs of the top-K feasible configurations of a search (by "
                                   "validation accuracy) in a companion study; `search worker --study STUDY.final` "
                                   "trains and tests them, `search status`/`report` show mean ± std test accuracy "
                                   "and the rank correlation with the search.")
    s.add_argument("--study", required=True, help="the search study")
    s.add_argument("--top", type=positive_int, default=FINALIZE_TOP, help="configurations to finalize (default %(default)s)")
    s.add_argument("--epochs", type=positive_int,
                   help="epochs of each final run (default: 5 x the search's epochs; a published recipe keeps its own)")
    s.add_argument("--seeds", type=positive_int, default=FINALIZE_SEEDS,
                   help="runs per configuration, seeds 0..N-1 (default %(default)s)")
    s.add_argument("--full-train", action="store_true",
                   help="train on all 50,000 images (no validation split; the last epoch is kept) "
                        "(default: the search's train split, validation kept)")
    s.add_argument("--final-study", metavar="NAME", help="companion study name (default: STUDY.final)")
    s.add_argument("--baselines", nargs="?", const="all", metavar="NAMES",
                   help="also train hand designs with their published recipes under the same epochs, seeds and data, "
                        "narrowed to the budget where over it: all (the default when the flag is given alone) or a "
                        "comma-separated list of presets with a published recipe; status and report then show the "
                        "searched winner's gain over the best of them with a 95%% confidence interval (default: none)")
    _add_storage(s)
    s.set_defaults(func=cmd_finalize)

    s = sub.add_parser("pareto", help="the non-dominated trials: validation accuracy vs parameters and vs MACs")
    s.add_argument("--study", required=True, help="study name (required)")
    s.add_argument("--json", action="store_true", help="machine-readable output (default: a table)")
    _add_storage(s)
    s.set_defaults(func=cmd_pareto)

    s = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a model file")
    s.add_argument("file", help="a file written by `search export-best`")
    s.add_argument("--data-dir", help=f"CIFAR-10 folder (default: {DATA_DIR_DEFAULT})")
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP)
    s.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
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
    s.add_argument("--out", required=True, help="CSV to write, in a folder that exists")
    s.add_argument("--force", action="store_true", help="replace --out if it exists (default: refuse)")
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("dashboard", help="serve optuna-dashboard for a study, checkpoints downloadable, on this machine")
    s.add_argument("--study", help="the study to open (default: the list of every study in the storage)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only; the dashboard has no "
                        "authentication, so reach it from elsewhere by an SSH tunnel or kubectl port-forward)")
    _add_storage(s)
    s.add_argument("--artifacts", help=ARTIFACTS_HELP)
    s.add_argument("--port", type=int_in(1, 65_535), default=DASHBOARD_PORT, help="port to listen on (default %(default)s)")
    s.add_argument("--verbose", action="store_true", help="print every HTTP request the dashboard answers (default: off)")
    s.set_defaults(func=cmd_dashboard)

    s = sub.add_parser("report", help="PNG plots and a Markdown summary of a study")
    s.add_argument("--study", required=True, help="study name (required)")
    s.add_argument("--out", required=True, help="folder to write into (made if missing, in a folder that exists)")
    s.add_argument("--force", action="store_true", help="write over an earlier report in --out (default: refuse)")
    _add_storage(s)
    s.add_argument("--artifacts", help=ARTIFACTS_HELP)
    s.set_defaults(func=cmd_report)
    for action in sub._choices_actions:  # `search COMMAND --help` opens with its one-line summary
        command = sub.choices[action.dest]
        command.description = command.description or action.help[:1].upper() + action.help[1:] + "."
    return p


def main(argv: list[str] | None = None) -> int:
    args = resolve(build_parser().parse_args(argv))
    func: Callable[[argparse.Namespace], int] = args.func
    return run_guarded(args.command, lambda: func(args))


def run_guarded(command: str, run: Callable[[], int]) -> int:
    """`run()`'s exit code; its errors as one line on stderr and exit 1 (see the module's docstring),
    or EXIT_TRANSIENT for a waiting command whose database or artifact store stayed away."""
    from storage.errors import Unavailable
    try:
        code = run()
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`search status | head -3`): stop quietly, as cat and ls do.
        _discard_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe
    except Unavailable as e:  # the database or the store stayed away past its wait: transient
        return _error(command, str(e), EXIT_TRANSIENT if command in WAITING_COMMANDS else EXIT_USER_ERROR)
    except ValueError as e:
        return _error(command, str(e))
    except OSError as e:  # an output path that cannot be written, a full disk, ...
        return _error(command, f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e) or type(e).__name__)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from storage.errors import database_error_line
        line = database_error_line(e)
        if line is None:
            # A bug, not a bad input: still one line at the terminal; SEARCH_DEBUG=1 shows where.
            if debug():
                raise
            first = (str(e).strip().splitlines() or [""])[0]
            line = f"unexpected {type(e).__name__}: {first} (rerun with SEARCH_DEBUG=1 for the traceback)"
        return _error(command, line)


def _error(command: str, message: str, code: int = 1) -> int:
    message = " ".join(message.split()) or "failed"  # one line, whatever the exception held
    try:
        print(f"search {command}: error: {message}", file=sys.stderr)
    except BrokenPipeError:
        pass
    return code


def _discard_stdout() -> None:
    """Point stdout at /dev/null so Python's flush at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
