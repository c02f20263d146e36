"""The command line's rough edges, as an administrator meets them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from trackmilter.cli import main


def _config(tmp_path: Path, db: Path | None = None) -> Path:
    db = db or tmp_path / "tm.db"
    cfg = tmp_path / "tm.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    return cfg


def test_config_is_accepted_after_the_command_too(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--config", str(cfg)], env={})
    assert first.exit_code == 0, first.output
    assert first.output.startswith("created the database schema (revision ")
    again = runner.invoke(main, ["--config", str(cfg), "db", "upgrade"], env={})
    assert again.output.startswith("the database schema is up to date (revision ")
    res = runner.invoke(main, ["status", "--config", str(cfg), "nobody@example.org"], env={})
    assert res.exit_code == 3 and "nothing recorded for 'nobody@example.org'" in res.output


def test_read_only_commands_do_not_create_a_missing_database(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    cfg = _config(tmp_path, db)
    for args in (["status", "x@example.org"], ["report"], ["purge", "--older-than", "1"]):
        res = CliRunner().invoke(main, ["--config", str(cfg), *args], env={})
        assert res.exit_code == 1, (args, res.output)
        assert f"no database at {db}" in res.output
    assert not db.exists()


def test_environment_typos_and_bad_numbers_are_named(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    res = CliRunner().invoke(main, ["--config", str(cfg), "status", "x"],
                             env={"TRACKMILTER_MILTR_SOCKET": "unix:/tmp/x"})
    assert res.exit_code == 78
    assert "TRACKMILTER_MILTR_SOCKET: did you mean TRACKMILTER_MILTER_" in res.output
    res = CliRunner().invoke(main, ["--config", str(cfg), "status", "x"],
                             env={"TRACKMILTER_MILTER_TIMEOUT": "ten"})
    assert res.exit_code == 78
    assert "TRACKMILTER_MILTER_TIMEOUT: expected a whole number, got 'ten'" in res.output
    assert "invalid literal" not in res.output


def test_a_daemon_refuses_a_database_path_it_can_never_write(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "missing-dir" / "tm.db")
    sock = tmp_path / "m.sock"
    cfg.write_text(cfg.read_text() + f'[milter]\nsocket = "unix:{sock}"\n')
    # A process of its own: the milter blocks stop signals in the thread that runs it.
    proc = subprocess.run([sys.executable, "-m", "trackmilter", "--config", str(cfg), "milter"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"directory {tmp_path / 'missing-dir'} for SQLite database" in proc.stderr
    assert not sock.exists()


def test_check_reads_what_the_daemons_read(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    key = tmp_path / "secret"
    key.write_text("k" * 32 + "\n")
    cfg.write_text(cfg.read_text() + f'[tracking]\nbase_url = "https://t.shop.de"\n'
                   f'secret_file = "{key}"\n')
    ok = CliRunner().invoke(main, ["check", "--config", str(cfg)], env={})
    assert ok.exit_code == 0 and "1 key(s)" in ok.output, ok.output
    key.write_text("short\n")  # a key file a tracker reloaded with would lose its workers
    bad = CliRunner().invoke(main, ["check", "--config", str(cfg)], env={})
    assert bad.exit_code == 78 and "[tracking] secret_file" in bad.output


def test_report_refuses_a_period_it_cannot_mean(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    CliRunner().invoke(main, ["--config", str(cfg), "db", "upgrade"], env={})
    for since in ("100000000d", "-7d", "0d"):
        res = CliRunner().invoke(main, ["--config", str(cfg), "report", f"--since={since}"],
                                 env={})
        assert res.exit_code == 2 and "--since" in res.output, (since, res.output)
        assert "Traceback" not in res.output
