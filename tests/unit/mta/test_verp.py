"""VERP bounce addresses name the original envelope sender and recipient."""

from __future__ import annotations

import pytest

from trackmilter.mta.reports import decode_verp


@pytest.mark.parametrize(
    ("address", "delimiters", "expected"),
    [
        pytest.param("owner+bob=example.net@lists.example.org", "+=",
                     ("owner@lists.example.org", "bob@example.net"), id="xverp"),
        pytest.param("<Owner+Bob=Example.NET@Lists.Example.org>", "+=",
                     ("Owner@lists.example.org", "Bob@example.net"), id="case-brackets"),
        pytest.param("owner+a+b=c=example.net@x.example", "+=",
                     ("owner@x.example", "a+b=c@example.net"), id="first-plus-last-equals"),
        pytest.param("bounce-bob#example.net@x.example", "-#",
                     ("bounce@x.example", "bob@example.net"), id="other-delimiters"),
        pytest.param("owner+bob=example.net@lists.example.org", "", None, id="off"),
        pytest.param("alice@example.com", "+=", None, id="plain"),
        pytest.param("alice+tag@example.com", "+=", None, id="subaddress"),
        pytest.param("+bob=example.net@x.example", "+=", None, id="no-prefix"),
        pytest.param("owner+bob=@x.example", "+=", None, id="no-domain"),
    ],
)
def test_decode_verp(address: str, delimiters: str, expected: tuple[str, str] | None) -> None:
    assert decode_verp(address, delimiters) == expected
