"""Where a sweep's study lives: a journal file in the sweep folder, or a database URL that several
machines share. Both are user input: the journal is read through the input gate and repaired or
refused before anything is appended; a URL is checked (scheme, driver, server) with its password
masked in every message."""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import optuna

from dragon_lightning.errors import DragonInputError, first_line, named
from dragon_lightning.gates.inputs import JOURNAL, read_bytes, stat_path
from dragon_lightning.gates.outputs import write_atomically

JOURNAL_FILE = "study.journal"
SCHEMES = ("postgresql", "mysql", "sqlite")
SETUP_ATTEMPTS = 3
DB_EXTRA = "pip install 'dragon-lightning[db]'"


CONNECT_SECONDS = 10
"""How long a database server may take to answer a connection (a server that never answers would
otherwise hold a sweep forever); a ``connect_timeout`` in the URL wins."""
SECRET_QUERY = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
"""Query parameters of a URL that carry a password (``?password=...``, ``sslpassword``...)."""


def secrets(parsed) -> list[str]:
    """The password of a parsed URL and those among its query parameters."""
    found = [str(parsed.password)] if parsed.password else []
    for name, value in parsed.query.items():
        if SECRET_QUERY.search(name):
            found += [value] if isinstance(value, str) else list(value)
    return found


def masked(url: str) -> str:
    """``url`` with its passwords (also as query parameters) replaced by ``***``, for messages and files."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        hidden = {name: "***" for name in parsed.query if SECRET_QUERY.search(name)}
        shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
        return named(shown, None)  # a line break or an unprintable character, escaped
    except Exception:  # not a URL SQLAlchemy can parse: show only its scheme
        return named(url.split("://", 1)[0][:20] + "://...", None)


def open_journal(path: Path) -> optuna.storages.BaseStorage:
    """The journal file at ``path``, after :func:`repair_journal`."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if stat_path(path, "--output_dir") is not None:
        repair_journal(path)
    try:
        return JournalStorage(JournalFileBackend(str(path)))  # replays every record now
    except Exception as error:  # a record Optuna cannot replay fails in its own way (KeyError, AssertionError...)
        raise DragonInputError(
            f"{path}: not a journal Optuna can replay ({type(error).__name__}: {first_line(error)}); "
            "move the file away to start a new study"
        ) from None


def repair_journal(path: Path) -> None:
    """Every line of a study journal must be a JSON record. A last line cut short (a crash or a full
    disk in the middle of a write) is removed, as Optuna itself never read it; a line that is not a
    record anywhere else is refused, naming the line, before anything is appended."""
    data = read_bytes(path, JOURNAL, "--output_dir")
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to read
            record = None
        if not isinstance(record, dict) or "op_code" not in record:
            raise DragonInputError(
                f"{path}: line {number}: not a record of an Optuna study; move the file away to start a new study"
            )
    if tail:  # rewritten whole through the output gate: a crash now leaves the journal as it was
        write_atomically(path, lambda tmp: tmp.write_bytes(data[: len(data) - len(tail)]))
        print(f"{path}: its last line was cut short by an interrupted write; removed it", flush=True)


def open_database(url: str, heartbeat: int = 60) -> optuna.storages.BaseStorage:
    """An Optuna database that several machines share: a trial whose machine stops beating for twice
    ``heartbeat`` seconds is retried, with the same settings. A plain ``postgresql://`` URL uses the
    psycopg 3 driver that the ``db`` extra installs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = masked(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise DragonInputError(f"--storage {shown}: not a database URL such as postgresql://user:password@host/db") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in SCHEMES:
        raise DragonInputError(f"--storage {shown}: unsupported scheme {parsed.drivername!r}; use one of {', '.join(SCHEMES)}")
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, NoSuchModuleError) as error:
        raise DragonInputError(f"--storage {shown}: the database driver is not installed ({error}); {DB_EXTRA}") from None
    for attempt in range(SETUP_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # Optuna marks the heartbeat experimental; it is what lets a machine stop
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    parsed.render_as_string(hide_password=False),
                    engine_kwargs=engine_options(parsed),
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
        except (SQLAlchemyError, ValueError, OSError) as error:
            reason = first_line(getattr(error, "orig", None) or error)
            # PostgreSQL says either, when two machines create the same table at once.
            racing = "already exists" in reason or "pg_type_typname_nsp_index" in reason
            if racing and attempt + 1 < SETUP_ATTEMPTS:
                time.sleep(1.0)  # another machine is creating the study tables this very moment
                continue
            for secret in secrets(parsed):  # where it stands alone: a password "p" leaves the "p" of "port" alone
                reason = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", "***", reason)
            raise DragonInputError(f"--storage {shown}: cannot open the study database ({reason})") from None
    raise AssertionError("unreachable")


def engine_options(parsed) -> dict:
    """A bound on how long connecting may take, where the driver has one and the URL sets none."""
    if parsed.get_backend_name() in ("postgresql", "mysql") and "connect_timeout" not in parsed.query:
        return {"connect_args": {"connect_timeout": CONNECT_SECONDS}}
    return {}


def open_storage(sweep_dir: str, storage_url: str | None, heartbeat: int = 60) -> optuna.storages.BaseStorage:
    """The sweep folder's journal, or the database at ``storage_url``."""
    return open_journal(Path(sweep_dir) / JOURNAL_FILE) if storage_url is None else open_database(storage_url, heartbeat)
