import os
import sys
from pathlib import Path

import pytest

# Two test workers share the machine's cores with the commands they start: one PyTorch (and BLAS)
# thread each, as commands run side by side should have, since a second thread waits for a core
# another process holds (test_cli, test_resume and test_export: 66 to 69 s with PyTorch's default
# threads, 54 s with one). The commands inherit it. Without pytest-xdist, pytest has imported torch
# already (the filterwarnings setting names a Lightning warning class), so the count is set directly too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
REAL_CSV = ROOT.parent / "shared" / "data" / "2020-10-21-dragon-data.csv"


@pytest.fixture(scope="session")
def real_csv() -> Path:
    if not REAL_CSV.exists():
        pytest.skip(f"the real dragon file is not at {REAL_CSV}")
    return REAL_CSV


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """An empty working directory for one CLI run."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1 for the session (skipped only where no server binaries exist)."""
    from postgres import PostgresServer, server_binaries

    binaries = server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    server = PostgresServer(binaries)
    server.start()
    try:
        yield server
    finally:
        server.stop()
