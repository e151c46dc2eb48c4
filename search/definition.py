"""What defines a study, stored inside it so every worker samples the same space.

One study = one space + budget + data split + epochs + pruner/sampler choice. The
definition lives in the study's user attributes as JSON, so it travels with the
database (PostgreSQL or SQLite) and plain Optuna tools can read it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import optuna

from objectives.checks import number
from objectives.space import SearchSpace

from core.settings import CIFAR10_TRAIN_IMAGES, DEFAULT_BUDGET, DEFAULT_SEED, DEFAULT_VAL_SIZE
from .strategies import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS, SAMPLERS, check_name

DEFINITION_ATTR = "definition"
MAX_STUDY_NAME = 512  # Optuna's study_name column (MAX_INDEXED_STRING_LENGTH)


@dataclass(frozen=True)
class StudyDefinition:
    space: SearchSpace = field(default_factory=SearchSpace)
    budget: int = DEFAULT_BUDGET     # trainable parameters
    val_size: int = DEFAULT_VAL_SIZE  # images held out of the 50,000 training images
    seed: int = DEFAULT_SEED         # of the validation split (and of each trial's training)
    train_limit: int | None = None   # keep only this many training images (smoke studies)
    pruner: str = DEFAULT_PRUNER     # a key of strategies.PRUNERS
    sampler: str = DEFAULT_SAMPLER   # a key of strategies.SAMPLERS
    # Multiply-accumulates per image a model may cost (None: no limit): the compute budget that
    # matters where training is slow (a CPU), enforced like the parameter budget.
    max_macs: int | None = None
    # A companion study of `search finalize` (search/finalize/): what it retrains, from where.
    final: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.space, SearchSpace):
            raise ValueError("space: must be a search space")
        number("budget", self.budget, 1, integer=True)
        # CIFAR-10 has 50,000 training images; the split must leave some to train on.
        # A finalize study with --full-train holds nothing out (0: all images train).
        number("val_size", self.val_size, 0 if self.final and self.final.get("full_train") else 1,
               CIFAR10_TRAIN_IMAGES - 1, integer=True)
        number("seed", self.seed, 0, 2**32 - 1, integer=True)  # numpy's seed range
        check_name("pruner", PRUNERS, self.pruner)
        check_name("sampler", SAMPLERS, self.sampler)
        if self.train_limit is not None:
            number("train_limit", self.train_limit, 1, integer=True)
        if self.max_macs is not None:
            number("max_macs", self.max_macs, 1, integer=True)

    @property
    def epochs(self) -> int:
        return self.space.recipe.epochs[1]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["space"] = self.space.to_dict()
        for later in ("final", "max_macs"):  # studies keep the stored form they had before these existed
            if d[later] is None:
                del d[later]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudyDefinition":
        return cls(**{**d, "space": SearchSpace.from_dict(d["space"])})

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return PRUNERS[self.pruner](self)

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return SAMPLERS[self.sampler](self)


class StudyNotFound(ValueError):
    pass


class StudyClash(ValueError):
    """A study of that name exists with another definition."""


def create_study(storage, name: str, definition: StudyDefinition) -> optuna.Study:
    """Create `name` with `definition`; a no-op if it exists with the same definition,
    a ValueError if it exists with another, or if nothing in its space fits its budget."""
    check_study_name(name)
    from objectives.feasibility import check_space_fits
    check_space_fits(definition.space.arch, definition.budget)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                load_if_exists=True, sampler=definition.make_sampler(),
                                pruner=definition.make_pruner())
    stored = study.user_attrs.get(DEFINITION_ATTR)
    wanted = definition.to_dict()
    if stored is None:
        study.set_user_attr(DEFINITION_ATTR, wanted)
        name_metric(study, definition)
    elif differences := [d for d in definition_diff(stored, wanted) if not _newer_default(*d)]:
        diff = "; ".join(f"{key}: stored {a}, given {b}" for key, a, b in differences)
        raise StudyClash(f"study {name!r} exists with a different definition: {diff}. Run it with the stored "
                         f"settings, or use another --study name")
    return study


def metric_name(definition: StudyDefinition) -> str:
    """What a trial's value is, as optuna-dashboard and Optuna's plots label the objective."""
    return "test accuracy (final run)" if definition.final is not None else "validation accuracy"


def name_metric(study: optuna.Study, definition: StudyDefinition) -> None:
    import warnings
    with warnings.catch_warnings():  # set_metric_names is marked experimental; what it stores is plain
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric_name(definition)])


def check_study_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("--study: the study name must not be empty")
    if len(name) > MAX_STUDY_NAME:
        raise ValueError(f"--study: the study name must be at most {MAX_STUDY_NAME} characters, got {len(name):,}")
    if not name.isprintable():
        raise ValueError(f"--study: the study name must be printable text, got {name!r}")
    return name


# Fields added to the definition after studies were stored, with their default. A stored
# definition without the field keeps its old reading of it (objectives.space reads a space
# without `block_types` as basic blocks only), so re-running `search create`/`run` with the
# defaults after an upgrade is the same study, not a clash; a value given on purpose still is.
NEWER_FIELDS = {"space.arch.block_types": json.dumps(list(SearchSpace().arch.block_types))}


def _newer_default(key: str, stored: str, given: str) -> bool:
    return stored == "null" and NEWER_FIELDS.get(key) == given


def definition_diff(stored: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted field, stored value, given value) for every leaf that differs, in field order."""
    out = []
    for key in list(given) + [k for k in stored if k not in given]:
        a, b = stored.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += definition_diff(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append((prefix + key, json.dumps(a), json.dumps(b)))
    return out


def load_study(storage, name: str) -> tuple[optuna.Study, StudyDefinition]:
    """The study and its stored definition, with the sampler and pruner it names."""
    storage = optuna.storages.get_storage(storage)  # a URL or a storage object, opened once
    try:  # the definition first (it names the sampler and pruner), then the study, opened once
        stored = storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(DEFINITION_ATTR)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StudyNotFound(f"no study named {name!r} in this storage"
                            + (f" (studies: {', '.join(known)})" if known else " (it holds no studies)")) from None
    if stored is None:
        raise ValueError(f"study {name!r} was not created by `search create` (no stored definition)")
    definition = StudyDefinition.from_dict(stored)
    study = optuna.load_study(study_name=name, storage=storage, sampler=definition.make_sampler(),
                              pruner=definition.make_pruner())
    return study, definition


def check_workable(definition: StudyDefinition) -> None:
    """Refuse, in one line, a study whose space has no model within its budget (a study
    created before `search create` checked that): its workers would sample forever."""
    from objectives.feasibility import check_space_fits
    check_space_fits(definition.space.arch, definition.budget)
