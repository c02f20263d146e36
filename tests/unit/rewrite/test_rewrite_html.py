"""Which HTML links get rewritten, and exactly how the markup around them is kept."""

from __future__ import annotations

import pytest
from tests.unit.rewrite.rewrite_support import PIXEL_URL, rewrite

from trackmilter.rewrite import RewriteOptions, rewrite_message

T = "https://t.example/c/"


def _expand(template: str) -> bytes:
    """`@N` stands for the tracking URL of link N."""
    for n in range(9, 0, -1):
        template = template.replace(f"@{n}", f"{T}{n}")
    return template.encode("utf-8")


CASES = [
    # (html, expected html with @N for tracking URLs, expected Link.url values)
    pytest.param(
        '<a href="http://a.example/">x</a>',
        '<a href="@1">x</a>',
        ["http://a.example/"],
        id="double-quoted",
    ),
    pytest.param(
        "<a href='https://a.example/p?q=1'>x</a>",
        "<a href='@1'>x</a>",
        ["https://a.example/p?q=1"],
        id="single-quoted",
    ),
    pytest.param(
        "<a href=https://a.example/p>x</a>",
        "<a href=@1>x</a>",
        ["https://a.example/p"],
        id="unquoted",
    ),
    pytest.param(
        "<a href=https://a.example/p/>x</a>",
        "<a href=@1>x</a>",
        ["https://a.example/p/"],
        id="unquoted-slash-end",
    ),
    pytest.param(
        '<A HREF="http://a.example/">x</A>',
        '<A HREF="@1">x</A>',
        ["http://a.example/"],
        id="upper-case",
    ),
    pytest.param(
        '<a\n\tclass="b"\r\n  href = "http://a.example/"\n>x</a>',
        '<a\n\tclass="b"\r\n  href = "@1"\n>x</a>',
        ["http://a.example/"],
        id="whitespace-in-tag",
    ),
    pytest.param(
        '<map><area shape="rect" href="http://a.example/m"></map>',
        '<map><area shape="rect" href="@1"></map>',
        ["http://a.example/m"],
        id="area",
    ),
    pytest.param(
        '<a/href="http://a.example/">x</a>',
        '<a/href="@1">x</a>',
        ["http://a.example/"],
        id="solidus-before-attribute",
    ),
    pytest.param(
        '<a href="HTTPS://A.EXAMPLE/X">x</a>',
        '<a href="@1">x</a>',
        ["HTTPS://A.EXAMPLE/X"],
        id="upper-case-scheme",
    ),
    pytest.param(
        '<a href="http://a.example/1">1</a><a href="http://b.example/2">2</a>',
        '<a href="@1">1</a><a href="@2">2</a>',
        ["http://a.example/1", "http://b.example/2"],
        id="order",
    ),
    pytest.param(
        '<a href="http://a.example/" href="http://b.example/">x</a>',
        '<a href="@1" href="http://b.example/">x</a>',
        ["http://a.example/"],
        id="duplicate-href-first-wins",
    ),
    pytest.param(
        '<a title="x>y" href="http://a.example/">x</a>',
        '<a title="x>y" href="@1">x</a>',
        ["http://a.example/"],
        id="gt-in-quoted-value",
    ),
    # Not links to track.
    pytest.param(
        '<img src="http://a.example/i.png"><link href="http://a.example/s.css">',
        None,
        [],
        id="img-and-link",
    ),
    pytest.param(
        '<abbr href="http://a.example/">x</abbr><address href="http://a.example/">',
        None,
        [],
        id="tags-starting-with-a",
    ),
    pytest.param(
        '<a href="mailto:x@a.example">m</a><a href="tel:+123">t</a><a href="#top">a</a>',
        None,
        [],
        id="mailto-tel-anchor",
    ),
    pytest.param(
        '<a href="/relative">r</a><a href="//a.example/p">p</a><a href="page.html">q</a>',
        None,
        [],
        id="relative",
    ),
    pytest.param(
        '<a href="{{action_url}}">a</a><a href="[unsubscribe]">u</a><a href="<%url%>">u</a>',
        None,
        [],
        id="placeholders",
    ),
    pytest.param(
        '<a href="javascript:go()">j</a><a href="ftp://a.example/">f</a><a href="httpx://a">h</a>',
        None,
        [],
        id="other-schemes",
    ),
    pytest.param("<a href>x</a><a href=>y</a><a name=top>z</a>", None, [], id="no-value"),
    pytest.param('<a href="http://a.example/', None, [], id="unterminated-quote"),
    pytest.param("<a href=http://a.example/", None, [], id="unterminated-tag"),
    # Entities: decoded for the URL, the raw value is replaced as a whole.
    pytest.param(
        '<a href="http://a.example/?a=1&amp;b=2">x</a>',
        '<a href="@1">x</a>',
        ["http://a.example/?a=1&b=2"],
        id="entity-amp",
    ),
    pytest.param(
        '<a href="http://a.example/?a=1&#38;b=2&#x26;c=3">x</a>',
        '<a href="@1">x</a>',
        ["http://a.example/?a=1&b=2&c=3"],
        id="entity-numeric",
    ),
    pytest.param(
        '<a href="http://a.example/?a=1&copy=2&amp=3">x</a>',
        '<a href="@1">x</a>',
        ["http://a.example/?a=1&copy=2&amp=3"],
        id="entity-legacy-no-semicolon-in-attribute",
    ),
    pytest.param(
        '<a href="&#104;ttp://a.example/&quot;">x</a>',
        '<a href="@1">x</a>',
        ['http://a.example/"'],
        id="entity-hides-scheme",
    ),
    pytest.param(
        '<a href="  http://a.example/a\n\tb  ">x</a>',
        '<a href="@1">x</a>',
        ["http://a.example/ab"],
        id="whitespace-stripped-like-browsers",
    ),
    pytest.param(
        '<a href="https://a.example/caf\u00e9">x</a>',
        '<a href="@1">x</a>',
        ["https://a.example/caf\u00e9"],
        id="non-ascii-utf8",
    ),
    # Comments, conditional comments, raw text.
    pytest.param(
        '<!-- <a href="http://a.example/">x</a> --><a href="http://b.example/">y</a>',
        '<!-- <a href="http://a.example/">x</a> --><a href="@1">y</a>',
        ["http://b.example/"],
        id="ordinary-comment",
    ),
    pytest.param(
        '<!--[if mso]><a href="http://a.example/">o</a><![endif]-->',
        '<!--[if mso]><a href="@1">o</a><![endif]-->',
        ["http://a.example/"],
        id="conditional-comment",
    ),
    pytest.param(
        '<!--[if (gte mso 9)|(IE)]><table><tr><td><a href="http://a.example/">o</a></td></tr></table><![endif]-->',
        '<!--[if (gte mso 9)|(IE)]><table><tr><td><a href="@1">o</a></td></tr></table><![endif]-->',
        ["http://a.example/"],
        id="conditional-comment-expression",
    ),
    pytest.param(
        '<!--[if !mso]><!--><a href="http://a.example/">n</a><!--<![endif]-->',
        '<!--[if !mso]><!--><a href="@1">n</a><!--<![endif]-->',
        ["http://a.example/"],
        id="downlevel-revealed",
    ),
    pytest.param(
        '<!--><a href="http://a.example/">x</a>',
        '<!--><a href="@1">x</a>',
        ["http://a.example/"],
        id="abrupt-empty-comment",
    ),
    pytest.param(
        '<!-- never closed <a href="http://a.example/">x</a>', None, [], id="unclosed-comment"
    ),
    pytest.param(
        '<script>var s = \'<a href="http://a.example/">\';</script><a href="http://b.example/">y</a>',
        '<script>var s = \'<a href="http://a.example/">\';</script><a href="@1">y</a>',
        ["http://b.example/"],
        id="script",
    ),
    pytest.param(
        '<STYLE type="text/css">a[href="http://a.example/"]{}</STYLE ><a href="http://b.example/">y</a>',
        '<STYLE type="text/css">a[href="http://a.example/"]{}</STYLE ><a href="@1">y</a>',
        ["http://b.example/"],
        id="style-upper-case",
    ),
    pytest.param(
        '<img alt="<a href=\'http://a.example/\'>" src="i.png"><a href="http://b.example/">y</a>',
        '<img alt="<a href=\'http://a.example/\'>" src="i.png"><a href="@1">y</a>',
        ["http://b.example/"],
        id="markup-inside-attribute-value",
    ),
    pytest.param(
        '<img alt="<!--"><a href="http://b.example/">y</a>',
        '<img alt="<!--"><a href="@1">y</a>',
        ["http://b.example/"],
        id="comment-start-inside-attribute-value",
    ),
    # Opt-out.
    pytest.param('<a data-notrack href="http://a.example/">x</a>', None, [], id="optout-no-value"),
    pytest.param(
        '<a href="http://a.example/" DATA-NOTRACK="false">x</a>',
        None,
        [],
        id="optout-any-value-any-case",
    ),
    pytest.param(
        '<a data-notrack-not href="http://a.example/">x</a>',
        '<a data-notrack-not href="@1">x</a>',
        ["http://a.example/"],
        id="optout-exact-name-only",
    ),
]


@pytest.mark.parametrize(("html", "expected", "urls"), CASES)
def test_html_links(html: str, expected: str | None, urls: list[str]) -> None:
    body = html.encode("utf-8")
    result = rewrite(body, cte="8bit")
    assert [link.url for link in result.links] == urls
    if expected is None:
        assert result.body is None
    else:
        assert result.body == _expand(expected)
        # Link.raw is exactly what was replaced.
        restored = result.body
        for link in reversed(result.links):
            restored = restored.replace(f"{T}{link.index}".encode(), link.raw)
        assert restored == body


L1, L2, L3 = "https://example.com/", "https://sub.example.com:8443/p", "https://u:p@EXAMPLE.com./q"
L4, L5, L6 = "https://notexample.com/", "https://x.example/", "https://t.example/c/9"
POLICY = [
    pytest.param({}, [L1, L2, L3, L4, L5, L6], id="defaults"),
    pytest.param(
        {"tracker_prefix": "https://t.example/"}, [L1, L2, L3, L4, L5], id="tracker-prefix"
    ),
    pytest.param(
        {"excluded_domains": frozenset({"Example.COM"})},
        [L4, L5, L6],
        id="excluded-domain-and-subdomains",
    ),
    pytest.param(
        {"excluded_domains": frozenset({".sub.example.com"})},
        [L1, L3, L4, L5, L6],
        id="excluded-subdomain-only",
    ),
    pytest.param({"optout_attribute": "data-keep"}, [L1, L2, L3, L4, L6], id="custom-optout"),
]
POLICY_HTML = (
    '<a href="https://example.com/">1</a><a href="https://sub.example.com:8443/p">2</a>'
    '<a href="https://u:p@EXAMPLE.com./q">3</a><a href="https://notexample.com/">4</a>'
    '<a data-keep href="https://x.example/">5</a><a href="https://t.example/c/9">6</a>'
)


@pytest.mark.parametrize(("options", "urls"), POLICY)
def test_link_policy(options: dict[str, object], urls: list[str]) -> None:
    result = rewrite(POLICY_HTML.encode(), **options)
    assert [link.url for link in result.links] == urls


def test_html_links_option_off() -> None:
    html = b'<html><body><a href="http://a.example/">x</a></body></html>\n'
    assert rewrite(html, html_links=False).body is None
    with_pixel = rewrite(html, html_links=False, pixel=True)
    assert with_pixel.links == () and with_pixel.pixel_added
    assert b'href="http://a.example/"' in (with_pixel.body or b"")


PIXEL = (
    f'<img src="{PIXEL_URL}" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0" />'
)
PIXEL_CASES = [
    pytest.param(
        "<html><body>x</body></html>\n",
        f"<html><body>x{PIXEL}</body></html>\n",
        id="before-body-close",
    ),
    pytest.param(
        "<body>x</BODY >\n</body>\n",
        f"<body>x</BODY >\n{PIXEL}</body>\n",
        id="last-body-close-any-case",
    ),
    pytest.param("<p>fragment</p>\r\n\r\n", f"<p>fragment</p>{PIXEL}\r\n\r\n", id="no-body-close"),
    pytest.param("", PIXEL, id="empty"),
]


@pytest.mark.parametrize(("html", "expected"), PIXEL_CASES)
def test_pixel_placement(html: str, expected: str) -> None:
    result = rewrite(html.encode(), pixel=True)
    assert result.pixel_added
    assert result.body == expected.encode()


def test_pixel_once_in_first_html_part() -> None:
    part = b"Content-Type: text/html\n\n<body>x</body>\n"
    body = b"--b\n" + part + b"--b\n" + part + b"--b--\n"
    result = rewrite(body, "multipart/alternative; boundary=b", pixel=True)
    assert result.body is not None and result.body.count(b"<img") == 1
    assert result.body.index(b"<img") < result.body.index(b"--b\n", 4)


def test_linker_output_is_checked_and_ampersand_escaped() -> None:
    html = b'<a href="http://a.example/">x</a>'
    options = RewriteOptions()
    result = rewrite_message(
        "text/html", None, html, lambda i, u: "https://t/c?a=1&t=2", None, options
    )
    assert result.body == b'<a href="https://t/c?a=1&amp;t=2">x</a>'
    for bad in ('https://t/"x', "https://t/ x", "https://t/<", "https://t/\u00e9"):
        with pytest.raises(ValueError):
            rewrite_message("text/html", None, html, lambda i, u, b=bad: b, None, options)
    with pytest.raises(ValueError):
        rewrite_message("text/html", None, html, lambda i, u: "x", 'https://t/"', options)


def test_linker_can_decline_a_link() -> None:
    html = b'<a href="http://a.example/x?a=1&amp;b=2">1</a><a href="http://b.example/">2</a>'

    def linker(index: int, url: str) -> str:
        return url if url.startswith("http://a.") else f"https://t/c/{index}"

    result = rewrite_message("text/html", None, html, linker, None, RewriteOptions())
    assert (
        result.body
        == b'<a href="http://a.example/x?a=1&amp;b=2">1</a><a href="https://t/c/1">2</a>'
    )
    assert [(link.index, link.url) for link in result.links] == [(1, "http://b.example/")]
