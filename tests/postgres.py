"""A real PostgreSQL server for the tests: its own data folder, a free loopback port, stopped at the end."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER, PASSWORD, DATABASE = "dragon", "s3cret-pw", "dragons"


def server_binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and createdb (Debian keeps them off the PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found and (Path(found).parent / "createdb").exists() else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """initdb, start, create the database; as the ``postgres`` user when run as root (the server refuses root)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="dragon-postgres-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.folder, "postgres")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.binaries / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(password_file, "postgres")
        self._run(
            "initdb", "-D", str(self.folder / "data"), "-U", USER, f"--pwfile={password_file}", "-A", "scram-sha-256", "--no-sync"
        )
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        environment = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(
            [str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE],
            check=True,
            capture_output=True,
            timeout=60,
            env=environment,
        )

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, password: str = PASSWORD, database: str = DATABASE) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"
