"""CPython's email test messages: untouched unless they hold an eligible link, and then only there."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support import CORPUS
from tests.unit.rewrite.rewrite_support import (
    assert_same_structure,
    header_values,
    rewrite,
    split_message,
    with_cte,
)

MIME_FILES = sorted((CORPUS / "mime").glob("msg_*.txt"))

OPTION_SETS = {
    "html": {},
    "text": {"text_links": True},
    "pixel": {"pixel": True},
}
# What each option set must change (file stem -> number of links), found by reading the
# messages: bare URLs in top-level text parts (not those inside attached messages or
# headers), and every message with a usable text/html part for the pixel.
EXPECTED: dict[str, dict[str, int]] = {
    "html": {},
    "text": {"msg_02": 2, "msg_19": 2},
    "pixel": {
        name: 0 for name in ("msg_08", "msg_09", "msg_10", "msg_12", "msg_12a", "msg_15", "msg_40")
    },
}


def test_corpus_is_there() -> None:
    assert len(MIME_FILES) >= 40, f"MIME corpus not found under {CORPUS}"


@pytest.mark.parametrize("crlf", [pytest.param(False, id="lf"), pytest.param(True, id="crlf")])
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
@pytest.mark.parametrize("path", MIME_FILES, ids=lambda p: p.stem)
def test_message_unchanged_or_same_structure(path: Path, option_set: str, crlf: bool) -> None:
    raw = path.read_bytes()
    if crlf:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    headers, body = split_message(raw)
    ctype, cte = header_values(headers)

    result = rewrite(body, ctype, cte, **OPTION_SETS[option_set])

    expected = EXPECTED[option_set].get(path.stem)
    if expected is None:
        assert result.body is None
        assert result.links == () and not result.pixel_added and result.top_cte is None
        return
    assert result.body is not None
    assert len(result.links) == expected
    assert result.pixel_added == (option_set == "pixel")
    if crlf:
        assert result.body.count(b"\n") == result.body.count(b"\r\n")
    else:
        assert b"\r" not in result.body
    new_headers = with_cte(headers, result.top_cte)
    assert_same_structure(headers + body, new_headers + result.body, result.links)


@pytest.mark.parametrize("path", MIME_FILES, ids=lambda p: p.stem)
def test_truncated_messages_never_raise(path: Path) -> None:
    """Every prefix of every message (cut at each line and mid-line) is handled quietly."""
    headers, body = split_message(path.read_bytes())
    ctype, cte = header_values(headers)
    cuts = sorted({i for i, c in enumerate(body) if c == 0x0A} | set(range(0, len(body), 7)))
    for cut in cuts:
        for options in ({"text_links": True, "pixel": True}, {}):
            result = rewrite(body[:cut], ctype, cte, **options)
            assert result.body is None or isinstance(result.body, bytes)
