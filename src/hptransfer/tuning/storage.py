"""Where a study lives: an Optuna storage built from one URL.

Accepted forms (``url=None`` means the embedded default, ``sqlite:///hptransfer.db``: a SQLite
file in the working directory):

* any SQLAlchemy URL Optuna's :class:`~optuna.storages.RDBStorage` takes:
  ``sqlite:///path.db``, ``postgresql+psycopg://user:password@host:5432/db``,
  ``mysql+pymysql://user:password@host/db``;
* a bare path ending ``.db``, ``.sqlite`` or ``.sqlite3``: a SQLite file;
* Optuna's journal file storage (one append-only log file, no database server; many processes
  on one machine or on a shared file system): ``journal:///abs/path/study.log``,
  ``journal://relative/study.log`` or a bare path ending ``.log``.

RDB storages get Optuna's heartbeat: a worker that dies mid-trial (SIGKILL, lost node) leaves its
trial RUNNING; once no heartbeat arrived for ``grace_period`` seconds, the next worker that asks
for a trial marks it FAIL and :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues
a copy with the same parameters (up to ``max_retry`` times). :func:`reap_stale_trials` makes a
running worker look every heartbeat as well, so with long trials the dead one is not left waiting
for the end of everyone's current trial (``hptransfer tune`` does this). The journal storage has
no heartbeat in Optuna; use an RDB storage when workers may crash.

No torch here: ``hptransfer suggest --study URL`` imports this module.
"""

from __future__ import annotations

import random
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hptransfer.scaling import ConfigError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = [
    "DEFAULT_STORAGE",
    "StorageError",
    "make_storage",
    "mask_url",
    "normalize_url",
    "reap_stale_trials",
]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_STORAGE = "sqlite:///hptransfer.db"

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_JOURNAL_PREFIX = "journal://"


class StorageError(ConfigError):
    """A storage URL that cannot be used (unknown scheme, missing driver, unreachable server).

    The message names the URL with its password masked.
    """


def mask_url(url: str) -> str:
    """``url`` with the password replaced by ``***`` (safe to print or log).

    Example:
        >>> mask_url("postgresql+psycopg://optuna:s3cret@db:5432/optuna")
        'postgresql+psycopg://optuna:***@db:5432/optuna'
    """
    # scheme://user:password@host...  (works for URLs SQLAlchemy cannot parse as well)
    return re.sub(r"^([A-Za-z][\w+.\-]*://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _password(url: str) -> str | None:
    m = re.match(r"^[A-Za-z][\w+.\-]*://[^:/@]*:([^@/]*)@", url)
    return m.group(1) if m and m.group(1) else None


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from ``text`` (driver messages sometimes echo it)."""
    secret = _password(url)
    text = text.replace(url, mask_url(url))
    if secret:
        text = text.replace(secret, "***")
    return text


def normalize_url(url: str | None) -> str:
    """The canonical form of a storage URL or path (see the module docstring).

    Example:
        >>> normalize_url(None)
        'sqlite:///hptransfer.db'
        >>> normalize_url("runs/study.log")
        'journal://runs/study.log'
        >>> normalize_url("proxy.db")
        'sqlite:///proxy.db'
    """
    if url is None or url == "":
        return DEFAULT_STORAGE
    url = str(url).strip()
    if "://" not in url:
        lower = url.lower()
        if lower.endswith(".log"):
            return _JOURNAL_PREFIX + url
        if lower.endswith(_SQLITE_SUFFIXES):
            return "sqlite:///" + url
        raise StorageError(
            f"storage {url!r} is neither a URL nor a known file type; use sqlite:///FILE.db, "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB, journal:///PATH.log or a path ending "
            ".db or .log"
        )
    return url


def make_storage(
    url: str | BaseStorage | None = None,
    *,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    max_retry: int | None = 2,
) -> BaseStorage:
    """Build an Optuna storage from a URL (or return a storage object unchanged).

    Args:
        url: see the module docstring; ``None`` is ``sqlite:///hptransfer.db``.
        heartbeat_interval: seconds between a running trial's heartbeats (RDB storages only);
            ``None`` disables the heartbeat and the retry of crashed workers' trials.
        grace_period: seconds without a heartbeat after which a RUNNING trial is stale
            (default: twice the interval).
        max_retry: how many times a stale trial is re-enqueued with the same parameters
            (``None``: without limit).

    Raises:
        StorageError: unknown scheme, missing database driver, or a server that cannot be
            reached; the message shows the URL with its password masked.

    Example:
        >>> storage = make_storage("sqlite:///:memory:")
        >>> type(storage).__name__
        'RDBStorage'
    """
    import optuna
    from optuna.storages import (
        BaseStorage,
        JournalStorage,
        RDBStorage,
        RetryHeartbeatStaleTrialCallback,
    )

    if isinstance(url, BaseStorage):
        return url
    text = normalize_url(url)
    shown = mask_url(text)
    if text.startswith(_JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend

        path = Path(text[len(_JOURNAL_PREFIX) :])
        if not path.name:
            raise StorageError(f"journal storage {shown!r} names no file; use journal:///PATH.log")
        _check_journal_head(path, shown)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StorageError(f"cannot open journal storage {shown}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # replaying the log
            why = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc).split("\n")[0]
            raise StorageError(
                f"{path} is not an Optuna journal log ({why}); give the .log file `hptransfer tune "
                "--storage journal:///PATH.log` wrote, or a new path to start one"
            ) from None

    kwargs: dict[str, Any] = {}
    if heartbeat_interval is not None:
        with warnings.catch_warnings():  # the heartbeat API is "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        kwargs = {
            "heartbeat_interval": int(heartbeat_interval),
            "grace_period": int(grace_period if grace_period is not None else 2 * heartbeat_interval),
            "heartbeat_stale_trial_callback": retry,
        }
    if text.startswith("sqlite:///"):
        db_path = text[len("sqlite:///") :]
        if db_path and db_path != ":memory:" and not db_path.startswith("file:"):
            parent = Path(db_path).parent
            if not parent.exists():
                raise StorageError(f"cannot open storage {shown}: folder {parent} does not exist")
    for attempt in range(_SCHEMA_RETRIES + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(text, **kwargs)
        except Exception as exc:  # sqlalchemy / driver errors: turn into one clear line
            if attempt < _SCHEMA_RETRIES and _schema_race(exc):
                # workers started together on a new database race to create its tables; the
                # loser finds them made by the winner on the next try
                time.sleep(0.05 * (attempt + 1) * (1 + random.random()))
                continue
            raise StorageError(_describe(exc, text)) from None
    raise AssertionError("unreachable")  # pragma: no cover


_SCHEMA_RETRIES = 8


def _check_journal_head(path: Path, shown: str) -> None:
    """Refuse a file whose first line is not a journal record before anything is appended to it.

    Optuna skips an unreadable *last* line (a write torn by a crash), so a file holding one line
    of anything else would read as an empty journal and then be appended to, corrupting it.
    """
    import json

    try:
        with path.open("rb") as f:
            head = f.readline(1 << 20)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot open journal storage {shown}: {exc.strerror or exc}") from None
    if not head.strip():
        return
    try:
        record = json.loads(head)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise StorageError(
            f"{path} is not an Optuna journal log (its first line is not a journal record); give the "
            "file `--storage journal:///PATH.log` wrote, or a new path to start one"
        )


@contextmanager
def reap_stale_trials(study: optuna.Study, every: float | None) -> Iterator[None]:
    """While the block runs, fail other workers' stale trials every ``every`` seconds.

    Optuna looks for stale trials (RUNNING, no heartbeat for the grace period) only when a worker
    asks for its next trial, so with long trials a dead worker's trial would wait for the end of
    every running worker's current trial. This thread calls :func:`optuna.storages.fail_stale_trials`
    on its own: the dead worker's trial is marked FAIL within about ``grace + every`` seconds and
    the storage's retry callback enqueues its copy, which the next free worker picks up. Two
    workers reaping at once fail a trial once (the storage refuses the second update).

    ``every=None`` or ``0``, or a storage without heartbeat (journal), makes this a no-op.
    """
    if not every or every <= 0:
        yield
        return
    import optuna

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
            except Exception:  # a dropped connection: try again next time, never kill the worker
                pass

    thread = threading.Thread(target=loop, name="hptransfer-reaper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _schema_race(exc: Exception) -> bool:
    """The error a worker gets when another one creates the same new database's tables."""
    msg = str(exc).lower()
    return ("already exists" in msg and ("table" in msg or "relation" in msg or "index" in msg)) or (
        "alembic_version" in msg and ("unique" in msg or "duplicate" in msg)
    )


def _describe(exc: Exception, url: str) -> str:
    shown = mask_url(url)
    name = type(exc).__name__
    msg = str(exc).split("\n")[0]
    scheme = url.split("://", 1)[0]
    if name == "NoSuchModuleError":
        return (
            f"unknown storage scheme {scheme!r} in {shown}; use sqlite:///FILE.db, "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB, mysql+pymysql://..., or journal:///PATH.log"
        )
    if name == "ArgumentError":
        return f"cannot parse storage URL {shown}: {_scrub(msg, url)}"
    if isinstance(exc, ModuleNotFoundError) or name == "ImportError":
        hint = (
            "pip install pymysql and use mysql+pymysql://"
            if scheme.startswith("mysql")
            else "pip install 'psycopg[binary]' and use postgresql+psycopg://"
        )
        return f"storage {shown} needs a database driver that is not installed; {hint}"
    msg = re.sub(r"^\([\w.]+\)\s*", "", msg)  # drop "(psycopg.OperationalError) "
    return f"cannot open storage {shown}: {_scrub(msg, url)}"
