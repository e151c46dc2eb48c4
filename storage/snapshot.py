"""The worker's view of a study's trials: reads that do not grow with the RUNNING trials.

Optuna's RDB cache (`_CachedStorage`) keeps finished trials for good but re-reads every
unfinished trial, whole (params, attributes, curve), on each `get_all_trials`, and one ask
calls it once per sampled parameter (TPE with the constant liar reads afresh for each), once
more to pop a WAITING trial, and Hyperband and the `--n-trials` check once each. With 1,000
trials RUNNING one ask+tell took about a minute (benchmarks/ask_cost.py). Optuna offers no
setting for this, so this subclass replaces only how the cache is brought up to date:

- a refresh asks the database which trials are new or changed state since the last one (one
  narrow query: ids only, and only the changed ones come back), reads those in full, and
  re-reads in full at most REREAD_RUNNING of the RUNNING trials it has held longest (not on
  a WAITING pop), so a peer's params and Hyperband rungs still reach this worker, a few at a time;
- the trial lists served between refreshes are at most REFRESH_SECONDS old, except that a
  read of WAITING trials (`study.ask` popping the queue) always refreshes first: a re-queued
  trial is picked up before a new one is sampled, as with Optuna's cache. Taking it stays
  Optuna's atomic WAITING -> RUNNING update, so two workers never take the same one.

How old each part of the view can be: finished and new trials, REFRESH_SECONDS; the contents
of a trial still RUNNING (what it reported, its rungs), as read when this worker first saw it,
renewed REREAD_RUNNING trials per refresh (every trial at every refresh while at most that
many run); this process's own trials, current (its writes are copied into the view). A single
trial (`get_trial`) is read from the database as before, and writes are Optuna's own.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Container

import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

REFRESH_SECONDS = 5.0   # how stale finished and new trials may be between WAITING pops
REREAD_RUNNING = 20     # RUNNING trials re-read in full per refresh, those held longest first


class _View:
    """What this process knows of one study's unfinished trials."""

    def __init__(self) -> None:
        self.refreshed_at = float("-inf")
        self.max_id = -1                          # every trial up to this id has been read once
        self.unfinished: dict[int, TrialState] = {}  # trial id -> state as last read
        self.read_at: dict[int, float] = {}       # trial id -> when it was last read in full


class SnapshotStorage(_CachedStorage):
    """Optuna's RDB cache with the refresh described above; what a worker's study runs on."""

    def __init__(self, backend: RDBStorage, refresh_seconds: float = REFRESH_SECONDS,
                 reread_running: int = REREAD_RUNNING) -> None:
        super().__init__(backend)
        self.refresh_seconds, self.reread_running = refresh_seconds, reread_running
        self._views: dict[int, _View] = {}

    def delete_study(self, study_id: int) -> None:
        super().delete_study(study_id)
        with self._lock:
            self._views.pop(study_id, None)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        self._refresh(study_id, force=states is not None and TrialState.WAITING in states)
        with self._lock:  # as _CachedStorage serves its cache
            trials = self._studies[study_id].trials.values()
            if states is not None:
                trials = [t for t in trials if t.state in states]
            trials = sorted(trials, key=lambda t: t.number)  # samplers expect number order
            return copy.deepcopy(trials) if deepcopy else trials

    # This process's own writes reach its view at once, as Optuna's cache re-read showed them:
    # an attribute, param or reported value is copied into the cached trial (the database
    # took it), and a state change refreshes the view at its next read (its `--n-trials`
    # check counts the trial it just ended; a popped trial is RUNNING).
    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        self._write_through(trial_id, lambda t: (
            setattr(t, "_params", {**t._params, param_name: distribution.to_external_repr(param_value_internal)}),
            setattr(t, "_distributions", {**t._distributions, param_name: distribution})))

    def set_trial_user_attr(self, trial_id: int, key: str, value) -> None:
        super().set_trial_user_attr(trial_id, key, value)
        self._write_through(trial_id, lambda t: setattr(t, "_user_attrs", {**t._user_attrs, key: value}))

    def set_trial_system_attr(self, trial_id: int, key: str, value) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        self._write_through(trial_id, lambda t: setattr(t, "_system_attrs", {**t._system_attrs, key: value}))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._write_through(trial_id, lambda t: setattr(t, "intermediate_values",
                                                        {**t.intermediate_values, step: intermediate_value}))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        try:
            return super().set_trial_state_values(trial_id, state=state, values=values)
        finally:
            with self._lock:
                where = self._trial_id_to_study_id_and_number.get(trial_id)
                if where is not None and where[0] in self._views:
                    self._views[where[0]].refreshed_at = float("-inf")

    def _write_through(self, trial_id: int, update) -> None:
        with self._lock:
            where = self._trial_id_to_study_id_and_number.get(trial_id)
            if where is None:
                return
            trials = self._studies[where[0]].trials
            cached = trials.get(where[1])
            if cached is None or cached.state.is_finished():
                return
            fresh = copy.copy(cached)  # lists already handed out keep the old object
            update(fresh)
            trials[where[1]] = fresh

    def _refresh(self, study_id: int, force: bool) -> None:
        with self._lock:
            self._studies.setdefault(study_id, _StudyInfo())  # where _add_trials_to_cache puts them
            view = self._views.setdefault(study_id, _View())
            now = time.monotonic()
            if not force and now - view.refreshed_at < self.refresh_seconds:
                return
            if view.max_id < 0:  # the first read is the whole study, as Optuna's
                trials = self._backend._get_trials(study_id, states=None, included_trial_ids=set(),
                                                   trial_id_greater_than=-1)
            else:
                changed, new = self._changed(study_id, view)
                # Not on a pop: it needs the queue, and runs once per trial already.
                held = [] if force else sorted(
                    (i for i in view.unfinished if i not in changed and view.read_at[i] < view.refreshed_at),
                    key=view.read_at.__getitem__)[:self.reread_running]
                ids = changed | set(held)
                trials = (self._backend._get_trials(study_id, states=None, included_trial_ids=ids,
                                                    trial_id_greater_than=view.max_id) if ids or new else [])
            view.refreshed_at = now
            self._add_trials_to_cache(study_id, trials)
            for t in trials:
                view.max_id = max(view.max_id, t._trial_id)
                if t.state.is_finished():
                    view.unfinished.pop(t._trial_id, None)
                    view.read_at.pop(t._trial_id, None)
                else:
                    view.unfinished[t._trial_id], view.read_at[t._trial_id] = t.state, now

    def _changed(self, study_id: int, view: _View) -> tuple[set[int], bool]:
        """Ids of known unfinished trials whose state moved on, and whether newer trials exist:
        ids only, and only those rows, so its cost follows what changed, not what runs."""
        trial = models.TrialModel
        conditions = [trial.trial_id > view.max_id]
        for state in (TrialState.WAITING, TrialState.RUNNING):
            ids = [i for i, s in view.unfinished.items() if s == state]
            if ids:
                conditions.append(sqlalchemy.and_(trial.trial_id.in_(ids), trial.state != state))
        with _create_scoped_session(self._backend.scoped_session) as session:
            rows = session.query(trial.trial_id).filter(trial.study_id == study_id, sqlalchemy.or_(*conditions)).all()
        ids = {r[0] for r in rows}
        return {i for i in ids if i <= view.max_id}, any(i > view.max_id for i in ids)


def worker_study_storage(storage):
    """The storage a worker's study runs on: an RDBStorage gets the snapshot cache in place of
    the one `optuna.load_study` would wrap it in; anything else is used as it is."""
    return SnapshotStorage(storage) if isinstance(storage, RDBStorage) else storage
