"""``airflow-portfolio restore-store``: a corrupt SQLite store restored from its last good backup (the corrupt file
kept aside), a sound one refused without ``--force``, a named backup restored with it; no Airflow needed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_portfolio import cli
from airflow_provider_portfolio.store import PortfolioStore
from airflow_provider_portfolio.store.maintenance import backup_store
from tests.store.helpers import make_bars

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def db(tmp_path) -> tuple[Path, Path]:
    """A SQLite store with 3 x 100 bars, backed up, then given 50 bars more: (store file, its backup)."""
    path = tmp_path / "desk.db"
    store = PortfolioStore.for_sqlite_file(path)
    store.migrate()
    store.upsert_bars(make_bars(["AAA", "BBB", "CCC"], 100))
    backup = Path(backup_store(store).path)
    store.upsert_bars(make_bars(["LATE"], 50))
    store.dispose()
    return path, backup


def bars(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM bars").fetchone()[0]
    finally:
        con.close()


def test_the_parser_dispatches_restore_store():
    args = cli.build_parser().parse_args(["restore-store", "--store", "sqlite:///x.db", "--force"])
    assert (args.func, args.store, args.backup, args.backup_dir, args.force) == (
        cli._restore_store, "sqlite:///x.db", None, None, True)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["restore-store"])  # --store is required


def test_a_corrupt_store_is_restored_from_the_last_good_backup(db, capsys):
    path, backup = db
    path.write_bytes(b"\x00" * 4096)
    assert cli.main(["restore-store", "--store", f"sqlite:///{path}"]) == 0
    out = capsys.readouterr().out
    assert f"Restored {path} from {backup}" in out and ".corrupt-" in out
    assert bars(path) == 300
    [aside] = path.parent.glob("desk.db.corrupt-*")
    assert aside.read_bytes() == b"\x00" * 4096


def test_a_sound_store_is_refused_without_force_and_restored_with_it(db, capsys):
    path, backup = db
    before = path.read_bytes()
    assert cli.main(["restore-store", "--store", str(path)]) == 1
    assert "is sound (integrity_check ok): refusing to overwrite it" in capsys.readouterr().err
    assert path.read_bytes() == before and bars(path) == 350

    assert cli.main(["restore-store", "--store", str(path), "--backup", str(backup), "--force"]) == 0
    assert bars(path) == 300
    [aside] = path.parent.glob("desk.db.replaced-*")
    assert bars(aside) == 350


def test_no_backup_is_an_error_that_changes_nothing(tmp_path, capsys):
    path = tmp_path / "lonely.db"
    path.write_bytes(b"not a database at all")
    assert cli.main(["restore-store", "--store", str(path), "--backup-dir", str(tmp_path / "none")]) == 1
    assert "restore-store: no good backup of" in capsys.readouterr().err
    assert path.read_bytes() == b"not a database at all"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lonely.db"]


def test_the_command_runs_in_a_shell_without_airflow(db):
    path, _ = db
    path.write_bytes(b"junk" * 100)
    code = ("import sys; from airflow_provider_portfolio.cli import main; rc = main(sys.argv[1:]); "
            "print('airflow imported:', 'airflow' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "restore-store", "--store", str(path)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "Restored" in done.stdout and done.stdout.endswith("airflow imported: False\n")
    assert bars(path) == 300
