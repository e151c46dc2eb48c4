"""Per-trial files (checkpoints) in Optuna's artifact store, visible in optuna-dashboard.

Where they live is a location: a directory (FileSystemArtifactStore) or `s3://BUCKET/PREFIX`
(Boto3ArtifactStore; endpoint, region and credentials from the standard AWS variables and
files, so AWS S3, MinIO, Ceph RGW and other S3-compatible stores work). The flag wins, then
$SEARCH_ARTIFACTS, then the location the study remembers (recorded by `create --artifacts`
or by its first worker), then ./artifacts.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from core.settings import ARTIFACTS_ENV, artifacts_location

from .errors import StoreUnavailable

ARTIFACT_ATTR_PREFIX = "artifacts:"  # where Optuna records an artifact's metadata on its trial
LOCATION_ATTR = "artifacts"          # study user attribute: where this study's artifacts live
S3 = "s3://"


def is_s3(location: str) -> bool:
    return location.startswith(S3)


def resolve_artifact_location(flag: str | None = None, study: optuna.Study | None = None) -> str:
    """The flag, else $SEARCH_ARTIFACTS, else the study's remembered location, else ./artifacts.
    Directories come back absolute, so the study can remember them for other working dirs."""
    location = artifacts_location(flag, study.user_attrs.get(LOCATION_ATTR) if study else None)
    if is_s3(location):
        return location
    return str(Path(location).expanduser().absolute())


def remember_location(study: optuna.Study, location: str) -> None:
    """Record where the study's artifacts live, once: later commands (on any host, in any
    directory) find them without the flag. A different location later is used, not stored."""
    stored = study.user_attrs.get(LOCATION_ATTR)
    if stored is None:
        study.set_user_attr(LOCATION_ATTR, location)
    elif stored != location:
        print(f"[{study.study_name}] note: artifacts go to {location}; the study remembers {stored}", flush=True)


def split_s3(location: str) -> tuple[str, str]:
    """s3://BUCKET/PREFIX -> (BUCKET, 'PREFIX/') ('' without a prefix)."""
    bucket, _, prefix = location[len(S3):].partition("/")
    if not bucket:
        raise ValueError(f"artifact location {location!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""


class PrefixedStore:
    """An artifact store whose objects live under `prefix` in `store`. Boto3ArtifactStore keys
    each object by its bare artifact id at the bucket root; a prefix lets one bucket hold many
    studies (or teams) apart, which Optuna has no option for."""

    def __init__(self, store, prefix: str, location: str):
        self.store, self.prefix, self.location = store, prefix, location

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.prefix + artifact_id)


class AtomicFileSystemStore(FileSystemArtifactStore):
    """Optuna's FileSystemArtifactStore, but a write goes to a temporary name beside the file
    and is renamed into place once whole: a full disk (or a killed worker) leaves no truncated
    file that a resume or an export would read, and the error names the file it was for.
    Optuna's store writes in place and leaves the partial file."""

    def __init__(self, base_path: str | Path, location: str = "") -> None:
        super().__init__(base_path)
        self.location = location or str(base_path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        path = self._get_filepath(artifact_id)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            with open(partial, "wb") as f:
                shutil.copyfileobj(content_body, f)
            os.replace(partial, path)
        except OSError as e:
            try:
                partial.unlink()
            except OSError:
                pass
            raise OSError(e.errno, f"{e.strerror or e} (partial file removed)", str(path)) from e
        finally:
            if partial.exists():  # not an OSError (interrupted): no half file left either
                try:
                    partial.unlink()
                except OSError:
                    pass


class RetryingStore:
    """An artifact store whose every read, write and delete waits out store faults (an S3
    endpoint down or busy, a full disk) through `retry` (storage.retry.StoreRetry): with back-off,
    for up to `--store-wait`, then StoreUnavailable. Optuna's stores and upload/download helpers
    do not retry; they run unchanged on top of this one. `context` ("trial 3") names what the
    calls are for in the retry's messages."""

    def __init__(self, store, retry):
        self.store, self.retry = store, retry
        self.location = location_of(store)

    @property
    def context(self) -> str:
        return self.retry.context

    @context.setter
    def context(self, value: str) -> None:
        self.retry.context = value

    def open_reader(self, artifact_id: str) -> BinaryIO:
        def read() -> BinaryIO:  # whole, inside the retry: a stream cut half-way is retried too
            reader = self.store.open_reader(artifact_id)
            try:
                return io.BytesIO(reader.read())
            finally:
                reader.close()
        return self.retry.call(read)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        def write() -> None:
            content_body.seek(0)  # a retry sends the whole file again
            self.store.write(artifact_id, content_body)
        self.retry.call(write)

    def remove(self, artifact_id: str) -> None:
        self.retry.call(self.store.remove, artifact_id)


def _open_s3(location: str, check: bool):
    try:
        import boto3
        import botocore.exceptions
        from optuna.artifacts import Boto3ArtifactStore
    except ImportError:
        raise ValueError(f"{location}: S3 artifacts need boto3 (pip install boto3)") from None
    bucket, prefix = split_s3(location)
    client = boto3.client("s3")  # AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, credentials: boto3's own lookup
    if check:  # fail at start-up with one line, not at the first checkpoint after an epoch of training
        try:
            client.head_bucket(Bucket=bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise ValueError(f"artifact store {location} is not reachable: {e}") from None
    return PrefixedStore(Boto3ArtifactStore(bucket, client=client), prefix, location)


def open_artifact_store(flag: str | None = None, create: bool = True, study: optuna.Study | None = None):
    """The artifact store of `flag`/$SEARCH_ARTIFACTS/the study's remembered location. With
    `create` (workers), a missing directory is made and the study remembers the location;
    without (readers), a missing directory is an error."""
    location = resolve_artifact_location(flag, study)
    if is_s3(location):
        store = _open_s3(location, check=True)
    else:
        path = Path(location)
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            raise ValueError(f"artifact directory {path} does not exist (set --artifacts or ${ARTIFACTS_ENV})")
        store = AtomicFileSystemStore(str(path), location)
    if create and study is not None:
        remember_location(study, location)
    return store


def location_of(store) -> str:
    return getattr(store, "location", "") or getattr(store, "_base_path", "")


def upload_torch(store, trial: optuna.Trial | optuna.trial.FrozenTrial, obj: dict[str, Any], filename: str,
                 storage=None) -> str:
    """torch.save `obj` under `filename` and upload it to `trial`; returns the artifact id."""
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        torch.save(obj, path)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                               storage=storage, mimetype="application/octet-stream")


def download_torch(store, artifact_id: str) -> dict[str, Any]:
    from objectives.checkpoint import load_quietly
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "artifact.pt"
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        try:
            return load_quietly(path)
        except Exception as e:  # torch's own message advises weights_only=False: unsafe, never passed on
            raise ValueError(f"artifact {artifact_id} is damaged: not a checkpoint this tool wrote "
                             f"({type(e).__name__})") from None


def remove_artifact(store, storage: optuna.storages.BaseStorage, trial_id: int, artifact_id: str) -> None:
    """Delete a superseded artifact: the file, then every metadata row that names it, so the
    dashboard lists only files that exist (`trial_id`: the trial that uploaded it)."""
    from .retry import StoppedWaiting
    try:
        store.remove(artifact_id)
    except (StoreUnavailable, StoppedWaiting):  # the store is away: not a file to skip but a fault
        raise
    except Exception:  # already gone (another process cleaned up): nothing to free
        pass
    forget_artifact(storage, trial_id, artifact_id)


def forget_artifact(storage: optuna.storages.BaseStorage, trial_id: int, artifact_id: str) -> None:
    """Delete the rows `artifacts:<id>` that Optuna's upload_artifact wrote on trial `trial_id`,
    and the copies later trials hold (storage/requeue.py creates a retry with its failed
    predecessor's system attributes, rows included).

    Optuna internals, on purpose and only here: Optuna has no call that deletes a trial
    attribute and refuses any write to a finished trial, which the failed attempt that uploaded
    an inherited checkpoint is. optuna-dashboard's own delete sets the row to null, which works
    on a running trial only and still leaves a null row per checkpoint for every reader of the
    trial to load. So the rows are deleted from the RDB storage's table; `trial_id >=` keeps
    the statement on the (trial_id, key) index. Another storage (in-memory, in tests) gets the
    dashboard's null where Optuna allows it."""
    key = ARTIFACT_ATTR_PREFIX + artifact_id
    from .requeue import backend
    rdb = backend(storage)  # the RDBStorage behind Optuna's cache wrapper
    if isinstance(rdb, optuna.storages.RDBStorage):
        from optuna.storages._rdb.models import TrialSystemAttributeModel as Row
        from optuna.storages._rdb.storage import _create_scoped_session  # Optuna's commit and errors
        with _create_scoped_session(rdb.scoped_session) as session:
            session.query(Row).filter(Row.trial_id >= trial_id, Row.key == key).delete(synchronize_session=False)
        return
    try:
        storage.set_trial_system_attr(trial_id, key, json.dumps(None))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
