"""Bare URLs in text/plain parts: only with text_links, cut like common linkifiers cut them."""

from __future__ import annotations

import pytest
from tests.unit.rewrite.rewrite_support import rewrite

T = "https://t.example/c/"

CASES = [
    # (text, expected text with @N for tracking URLs, expected URLs)
    pytest.param("see http://a.example/x\n", "see @1\n", ["http://a.example/x"], id="bare"),
    pytest.param("HTTPS://A.EXAMPLE/X here", "@1 here", ["HTTPS://A.EXAMPLE/X"], id="upper-case"),
    pytest.param(
        "Go to http://a.example/x.\n", "Go to @1.\n", ["http://a.example/x"], id="trailing-dot"
    ),
    pytest.param(
        "Really? http://a.example/?q=1,2;3!?\n",
        "Really? @1!?\n",
        ["http://a.example/?q=1,2;3"],
        id="trailing-punctuation",
    ),
    pytest.param(
        "(see http://a.example/x)\n",
        "(see @1)\n",
        ["http://a.example/x"],
        id="closing-paren-outside",
    ),
    pytest.param(
        "http://en.example.org/wiki/Foo_(bar) ok",
        "@1 ok",
        ["http://en.example.org/wiki/Foo_(bar)"],
        id="balanced-paren-inside",
    ),
    pytest.param(
        "<http://a.example/x.>\n",
        "<@1>\n",
        ["http://a.example/x."],
        id="angle-brackets-keep-punctuation",
    ),
    pytest.param(
        "<URL:http://a.example/y>\n",
        "<URL:@1>\n",
        ["http://a.example/y"],
        id="angle-brackets-url-prefix",
    ),
    pytest.param(
        "say \"http://a.example/q\" or 'https://b.example/r'",
        "say \"@1\" or '@2'",
        ["http://a.example/q", "https://b.example/r"],
        id="quotes-stop",
    ),
    pytest.param(
        "one http://a.example/1\r\ntwo https://b.example/2\r\n",
        "one @1\r\ntwo @2\r\n",
        ["http://a.example/1", "https://b.example/2"],
        id="crlf-lines",
    ),
    pytest.param(
        "caf\u00e9 http://a.example/\u00e9t\u00e9 x",
        "caf\u00e9 @1 x",
        ["http://a.example/\u00e9t\u00e9"],
        id="non-ascii",
    ),
    pytest.param(
        "xhttp://a.example/ hxxp://b.example/ http:// mailto:a@b.example", None, [], id="not-urls"
    ),
    pytest.param("plain words only\n", None, [], id="no-urls"),
]


@pytest.mark.parametrize(("text", "expected", "urls"), CASES)
def test_text_links(text: str, expected: str | None, urls: list[str]) -> None:
    body = text.encode("utf-8")
    result = rewrite(body, "text/plain; charset=utf-8", "8bit", text_links=True)
    assert [link.url for link in result.links] == urls
    assert {link.kind for link in result.links} <= {"text"}
    assert [link.raw for link in result.links] == [u.encode("utf-8") for u in urls]
    if expected is None:
        assert result.body is None
    else:
        for n in range(9, 0, -1):
            expected = expected.replace(f"@{n}", f"{T}{n}")
        assert result.body == expected.encode("utf-8")


@pytest.mark.parametrize(
    "options",
    [pytest.param({}, id="default-off"), pytest.param({"text_links": False}, id="explicit-off")],
)
def test_text_links_off(options: dict[str, object]) -> None:
    result = rewrite(b"see http://a.example/x\n", "text/plain", None, pixel=True, **options)
    assert result.body is None and result.links == () and not result.pixel_added


def test_text_links_policy_applies() -> None:
    text = (
        b"http://example.com/a https://www.example.com/b https://t.example/c/7 http://z.example/\n"
    )
    result = rewrite(
        text,
        None,  # no Content-Type: text/plain; us-ascii
        None,
        text_links=True,
        excluded_domains=frozenset({"example.com"}),
        tracker_prefix="https://t.example/",
    )
    assert [link.url for link in result.links] == ["http://z.example/"]


def test_document_order_across_parts() -> None:
    body = (
        b"--b\nContent-Type: text/plain\n\nhttp://a.example/1\n"
        b'--b\nContent-Type: text/html\n\n<a href="http://a.example/2">x</a>\n'
        b"--b\nContent-Type: text/plain\n\nhttp://a.example/3\n--b--\n"
    )
    result = rewrite(body, "multipart/mixed; boundary=b", text_links=True)
    assert [(link.index, link.part, link.kind) for link in result.links] == [
        (1, 1, "text"),
        (2, 2, "html"),
        (3, 3, "text"),
    ]
    only_html = rewrite(body, "multipart/mixed; boundary=b")
    assert [(link.index, link.part) for link in only_html.links] == [(1, 2)]
