"""Benchmark: rewrite_message against stdlib email parse+serialise on a ~50 KB message.

Run: python tests/benchmarks/bench_rewrite.py [--iterations N] [--cte quoted-printable|8bit]
Exits non-zero when the median speed-up is below the target (DESIGN: the email package
alone costs more than the per-message budget).
"""

from __future__ import annotations

import argparse
import binascii
import email
import email.policy
import re
import statistics
import sys
import time
from pathlib import Path

from trackmilter.rewrite import RewriteOptions, rewrite_message

TARGET_RATIO = 4.0
CORPUS = Path(__file__).resolve().parents[2] / "tests" / "corpus" / "html"
BOUNDARY = "=_bench_5f3a9c_="


def build_html() -> bytes:
    """A realistic long newsletter: two corpus templates merged, placeholders filled."""
    main = (CORPUS / "postmark" / "basic-full-example.html").read_text("utf-8")
    extra = (CORPUS / "sendgrid" / "dynamic-templates-newsletter-news_feed.html").read_text("utf-8")
    inner = re.search(r"<body[^>]*>(.*)</body>", extra, re.S | re.I)
    assert inner is not None
    counter = iter(range(1, 1000))

    def fill(m: re.Match[str]) -> str:
        n = next(counter)
        return f'href="https://app.example.com/{m.group(1)}?id={n}&amp;utm_source=mail"'

    html = main.replace("</body>", inner.group(1) + "</body>", 1)
    html = re.sub(r'href="\{\{\{?\s*([\w.]+)\s*\}\}\}?"', fill, html)
    footer = "".join(
        f'<a href="https://social{i}.example.net/acme?ref=newsletter&amp;n={i}">Follow {i}</a> '
        for i in range(15)
    )
    html = html.replace("</body>", f"<p>{footer}</p></body>", 1)
    return html.encode("utf-8")


def build_message(html: bytes, cte: str) -> tuple[bytes, bytes, str]:
    """(header block, body, top Content-Type) of a CRLF multipart/alternative message."""
    text = re.sub(rb"<[^>]+>", b"", html)
    text = re.sub(rb"[ \t]+", b" ", text)
    text = re.sub(rb"(\r?\n\s*)+", b"\n", text)[:4000].replace(b"\n", b"\r\n")
    html = html.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        html_body = binascii.b2a_qp(html, istext=True)
        text_body = binascii.b2a_qp(text, istext=True)
    else:
        html_body, text_body = html, text
    ctype = f'multipart/alternative; boundary="{BOUNDARY}"'
    headers = (
        "From: Acme <news@acme.example>\r\nTo: someone@example.org\r\n"
        "Subject: Our newsletter\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <bench@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: {ctype}\r\n"
    ).encode("ascii")
    b = BOUNDARY.encode("ascii")
    body = b"".join(
        [
            b"This is a multi-part message in MIME format.\r\n\r\n--" + b + b"\r\n",
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n",
            text_body,
            b"\r\n--" + b + b"\r\n",
            b"Content-Type: text/html; charset=utf-8\r\n",
            b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n",
            html_body,
            b"\r\n--" + b + b"--\r\n",
        ]
    )
    return headers, body, ctype


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--cte", default="quoted-printable", choices=["quoted-printable", "8bit"])
    args = parser.parse_args()

    headers, body, ctype = build_message(build_html(), args.cte)
    raw = headers + b"\r\n" + body
    options = RewriteOptions()

    def linker(index: int, url: str) -> str:
        return f"https://t.example/c/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj{index}"

    pixel = "https://t.example/o/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj"
    result = rewrite_message(ctype, None, body, linker, pixel, options)
    assert result.body is not None

    def stdlib() -> None:
        email.message_from_bytes(raw, policy=email.policy.default).as_bytes()

    def ours() -> None:
        rewrite_message(ctype, None, body, linker, pixel, options)

    for _ in range(20):  # warm-up: caches, regex compilation, allocator
        stdlib()
        ours()
    times: dict[str, list[float]] = {"stdlib": [], "ours": []}
    clock = time.perf_counter
    for _ in range(args.iterations):
        for name, fn in (("stdlib", stdlib), ("ours", ours)):
            t0 = clock()
            fn()
            times[name].append((clock() - t0) * 1000)

    std_med, our_med = (statistics.median(times[k]) for k in ("stdlib", "ours"))
    ratio = std_med / our_med
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"message size   {len(raw):>10,} bytes  ({args.cte} HTML + text/plain, CRLF)")
    print(f"links          {len(result.links):>10}")
    print(f"iterations     {args.iterations:>10}")
    print(f"{'':14} {'median ms':>10} {'p95 ms':>10}")
    for k in ("stdlib", "ours"):
        print(f"{k:14} {statistics.median(times[k]):>10.3f} {_pct(times[k], 0.95):>10.3f}")
    print(f"ratio          {ratio:>10.1f}x  (target >= {TARGET_RATIO:.0f}x)  {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
