"""`trackmilter decode`: one entry per recipient found, as lines or JSON; no config needed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from tests.support import BOUNCE_CORPUS

from trackmilter.cli import DECODE_FIELDS, main

EXIM = BOUNCE_CORPUS / "lhost-exim-30.eml"
ARF = BOUNCE_CORPUS / "arf-01.eml"


def test_json_has_every_field_per_recipient() -> None:
    result = CliRunner().invoke(main, ["decode", "--json", str(EXIM), str(ARF)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [tuple(r) for r in rows] == [DECODE_FIELDS, DECODE_FIELDS]
    dsn, arf = rows
    assert (dsn["file"], dsn["kind"], dsn["action"], dsn["status"][:2]) == (
        str(EXIM), "dsn", "failed", "5.")
    assert (arf["kind"], arf["feedback_type"]) == ("arf", "abuse")


def test_lines_are_tab_separated_fields() -> None:
    result = CliRunner().invoke(main, ["decode", str(EXIM)])
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    cells = line.split("\t")
    assert len(cells) == len(DECODE_FIELDS) and cells[:2] == [str(EXIM), "dsn"]
    assert cells[DECODE_FIELDS.index("hardbounce")] in ("hard", "soft")


def test_plain_mail_decodes_to_nothing_and_unreadable_file_fails(tmp_path: Path) -> None:
    plain = tmp_path / "plain.eml"
    plain.write_bytes(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    result = CliRunner().invoke(main, ["decode", "--json", str(plain)])
    assert result.exit_code == 0 and json.loads(result.output) == []
    missing = CliRunner().invoke(main, ["decode", str(tmp_path / "nope.eml")])
    assert missing.exit_code == 1 and "nope.eml" in missing.output
