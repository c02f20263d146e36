"""The native engine returns exactly what the Python engine returns.

Three layers: every corpus message through both engines whole (below); every rewrite test
with both engines' pieces compared on each call (conftest.py); and hypothesis-driven
differential runs over mutated MIME, HTML, charsets, transfer encodings, long lines and
hostile nesting (test_native_fuzz.py).
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tests.support import CORPUS
from tests.unit.rewrite import native_support
from tests.unit.rewrite.native_support import NATIVE, both, declining_linker
from tests.unit.rewrite.rewrite_support import header_values, linker, split_message

from trackmilter.rewrite import RewriteOptions, engine, native, scan, transfer

needs_native = pytest.mark.skipif(NATIVE is None, reason="native engine not built")

PIXEL = "https://t.example/o/PIXEL"
HONEY = "https://t.example/c/HONEY"
OPTION_SETS = {
    "default": RewriteOptions(),
    "text": RewriteOptions(text_links=True),
    "excluded": RewriteOptions(
        text_links=True, excluded_domains=frozenset({"example.com", "github.com", "Google.COM."})
    ),
    "prefix": RewriteOptions(tracker_prefix="https://app.example.com/", optout_attribute="TARGET"),
    "optout-href": RewriteOptions(optout_attribute="href", max_line=40),
    "no-html": RewriteOptions(html_links=False, text_links=True, max_line=76),
}


def _files(sub: str, pattern: str) -> list[Path]:
    return sorted((CORPUS / sub).rglob(pattern))


HTML_FILES = _files("html", "*.html")
MESSAGE_FILES = _files("mime", "msg_*.txt") + _files("bounces", "*.eml")


def _run_all(ctype: str | None, cte: str | None, body: bytes) -> int:
    n = 0
    for options in OPTION_SETS.values():
        for pixel, honey in ((None, None), (PIXEL, None), (PIXEL, HONEY)):
            for link in (linker, declining_linker):
                both(ctype, cte, body, link, pixel, options, honey)
                n += 1
    return n


def test_engine_choice_is_reported() -> None:
    assert native.ENGINE in ("native", "python")
    assert "python" in engine.ENGINES
    assert (native.NOTE is None) == (native.ENGINE == "native")
    assert ("native" in engine.ENGINES) == (NATIVE is not None)


@needs_native
@pytest.mark.parametrize("path", HTML_FILES, ids=lambda p: p.stem)
def test_corpus_html_identical(path: Path) -> None:
    html = path.read_bytes()
    crlf = html.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    variants = [
        ("text/html; charset=utf-8", None, html),
        ("text/html; charset=utf-8", "8bit", crlf),
        ("text/html; charset=utf-8", "quoted-printable", binascii.b2a_qp(html, istext=True)),
        ("text/html; charset=utf-8", "quoted-printable", binascii.b2a_qp(crlf, istext=True)),
        ("text/html; charset=utf-8", "base64", base64.encodebytes(html)),
        ("text/html; charset=utf-16", "base64", base64.encodebytes(html.decode().encode("utf-16"))),
        ("text/html; charset=windows-1252", "quoted-printable",
         binascii.b2a_qp(html.decode().encode("cp1252", "replace"))),
        ("text/plain; charset=utf-8", "8bit", html),
    ]
    for ctype, cte, body in variants:
        assert _run_all(ctype, cte, body)
    assert NATIVE is not None
    for optout in (b"data-notrack", b"", b"href", b"class"):
        assert NATIVE.find_hrefs(html, optout) == scan.find_hrefs(html, optout)


@needs_native
@pytest.mark.parametrize("path", MESSAGE_FILES, ids=lambda p: p.name)
def test_corpus_messages_identical(path: Path) -> None:
    raw = path.read_bytes()
    for data in (raw, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")):
        header, body = split_message(data)
        ctype, cte = header_values(header)
        assert _run_all(ctype, cte, body)


def test_the_expected_build_runs() -> None:
    """native_sanitized.py runs these tests on its instrumented build: make sure it is the
    one imported (and not the checkout's)."""
    where = os.environ.get("TRACKMILTER_EXPECT_NATIVE_AT")
    if where is None:
        pytest.skip("no particular build expected")
    assert NATIVE is not None and NATIVE.__file__ == where


def test_corpus_found() -> None:
    assert len(HTML_FILES) >= 50 and len(MESSAGE_FILES) >= 400


def _engine_in_subprocess(env_value: str | None, block_extension: bool = False) -> list[str]:
    code = (
        ("import sys; sys.modules['trackmilter.rewrite._native'] = None\n" if block_extension else "")
        + "from trackmilter.rewrite import native, RewriteOptions, rewrite_message\n"
        + "r = rewrite_message('text/html', None, b'<a href=\"http://a.example/\">a</a>',"
        + " lambda i, u: 'https://t.example/c/1', None, RewriteOptions())\n"
        + "print(native.ENGINE); print(r.body.decode()); print(native.NOTE)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    if env_value is not None:
        env[native.ENV] = env_value
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_python_engine_forced_by_environment() -> None:
    engine_name, body, note = _engine_in_subprocess("python")
    assert engine_name == "python"
    assert body == '<a href="https://t.example/c/1">a</a>'
    assert note == "TRACKMILTER_ENGINE=python"


def test_unknown_engine_value_runs_the_reference() -> None:
    engine_name, body, note = _engine_in_subprocess("fast")
    assert engine_name == "python"
    assert body == '<a href="https://t.example/c/1">a</a>'
    assert "TRACKMILTER_ENGINE='fast' is not python, native or auto" in note


def test_falls_back_to_python_without_the_extension() -> None:
    for value in (None, "auto"):
        engine_name, body, note = _engine_in_subprocess(value, block_extension=True)
        assert engine_name == "python"
        assert body == '<a href="https://t.example/c/1">a</a>'
        assert note.startswith("native engine not available")


def test_native_required_but_missing_fails_loudly() -> None:
    code = (
        "import sys; sys.modules['trackmilter.rewrite._native'] = None\n"
        "import trackmilter.rewrite\n"
    )
    env = {**os.environ, native.ENV: "native"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "TRACKMILTER_ENGINE=native but the native engine cannot be loaded" in proc.stderr


@needs_native
def test_native_is_the_default_when_built() -> None:
    engine_name, body, note = _engine_in_subprocess(None)
    assert (engine_name, note) == ("native", "None")
    assert body == '<a href="https://t.example/c/1">a</a>'


@needs_native
def test_differential_pieces_were_compared() -> None:
    """The conftest's comparison really runs (it would prove nothing if it were bypassed)."""
    before = native_support.CALLS["html_links"]
    from tests.unit.rewrite.rewrite_support import rewrite

    rewrite(b'<a href="http://a.example/">a</a>')
    assert native_support.CALLS["html_links"] == before + 1


def _odd_qp(data: bytes, eol: bytes, width: int) -> bytes:
    """Quoted-printable no encoder would write: every byte escaped, soft breaks every
    `width` characters (so re-encoding any stretch of it changes its bytes)."""
    enc = "".join(f"={b:02X}" for b in data).encode()
    lines = [enc[i : i + width] for i in range(0, len(enc), width)]
    return (b"=" + eol).join(lines)


@needs_native
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("width", [9, 60, 75])
def test_qp_splice_around_the_cluster_gap(eol: bytes, width: int) -> None:
    """Edits just closer and just farther apart than the splice's clustering distance (480
    decoded bytes): one re-encoded region or two, and the same bytes from both engines."""
    assert NATIVE is not None
    raw = _odd_qp(b"0123456789abcdef" * 150, eol, width)
    decoded = binascii.a2b_qp(raw)
    for gap in range(470, 491):
        for start in (0, 7, 100):
            edits = [(start, start + 5, b"NEW"), (start + 5 + gap, start + 9 + gap, b"<x>" * 30)]
            edits.append((edits[1][1] + gap, edits[1][1] + gap, b"PIXEL"))
            want = transfer.qp_splice(raw, decoded, edits, eol)
            assert NATIVE.qp_splice(raw, decoded, edits, eol) == want, (gap, start)


@needs_native
@pytest.mark.parametrize(
    "answer",
    [None, b"https://t.example/c/1", 'https://t.example/"x', "", "https://t.example/?a&b&c",
     "https://t.example/é", "https://t.example/ x", 17, "SAME", "https://t.example/<"],
    ids=repr,
)
def test_linker_answers_identical(answer: object) -> None:
    """Whatever a linker returns (declines, bad URLs, not even a string), both engines do
    the same: the same edits, or the same exception."""

    def odd_linker(index: int, url: str) -> str:
        if answer == "SAME" or index == 2:
            return url
        if index == 3:
            raise LookupError(f"linker failed on {url}")
        return answer  # type: ignore[return-value]

    html = b'<a href="http://a.example/">a</a><a href="http://b.example/">b</a>'
    for extra in (b"", b'<a href="http://c.example/?x=1&amp;y">c</a>'):
        both("text/html", None, html + extra, odd_linker, None, RewriteOptions())
        both("text/plain", None, b"http://a.example/ http://b.example/ " + extra, odd_linker,
             None, RewriteOptions(text_links=True))


SNIPPETS = [
    b'<b title="never closed <a href="http://a.example/">a</a>',
    b"<b title='x' <a href=http://b.example/>",
    b'<p x= ><a y= href= "http://c.example/" z=>c</a>',
    b"<a x=>y href=http://d.example/>",
    b"<img src=x alt='<a href=http://e.example/>'><a href=http://f.example/>",
    b"<a href=http://g.example/ <a href=http://h.example/>",
    b"<!--[if mso]><a href=http://i.example/><![endif]--><!--><a href=http://j.example/>",
    b"<script><a href=http://k.example/></script ><style><a href=http://l.example/></style",
    b"<a\x0chref\x0c=\x0c'http://m.example/'\x0c>",
    b"<a href='http://n.example/' data-notrack=\"'\">",
    b"<a href=\"http://o.example/\"",
    b"<a href='http://p.example/",
    b"<",
    b"",
]


@needs_native
@pytest.mark.parametrize("html", SNIPPETS, ids=repr)
def test_scanner_edge_cases_identical(html: bytes) -> None:
    assert NATIVE is not None
    for optout in (b"data-notrack", b"", b"x", b"title"):
        assert NATIVE.find_hrefs(html, optout) == scan.find_hrefs(html, optout)
        for prefix in ("", "http://a"):
            got = NATIVE.html_links(html, optout, "utf-8", prefix, scan.unescape_attr)
            want = engine._html_links_python(html, optout, "utf-8", prefix, scan.unescape_attr)
            assert got == want


@needs_native
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_qp_splice_on_one_long_line(eol: bytes) -> None:
    """Clusters far apart on the same physical line (a sender that never breaks its QP
    lines): their regions overlap and are merged, in both engines."""
    assert NATIVE is not None
    raw = b"A=3D" * 900 + eol + b"tail" + eol
    decoded = binascii.a2b_qp(raw)
    edits = [(10, 12, b"one"), (700, 700, b"two"), (1500, 1510, b"three"), (1790, 1791, b"")]
    want = transfer.qp_splice(raw, decoded, edits, eol)
    assert want is not None
    assert NATIVE.qp_splice(raw, decoded, edits, eol) == want


def test_install_without_a_compiler_runs_the_python_engine(tmp_path: Path) -> None:
    """The extension is optional: with no working C compiler the wheel builds without it,
    and the installed trackmilter rewrites on the Python engine and says why."""
    root = Path(__file__).resolve().parents[3]
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(root / name, tree / name)
    shutil.copytree(root / "milter", tree / "milter",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    env = {**os.environ, "CC": "/bin/false", "PIP_NO_INPUT": "1"}
    env.pop(native.ENV, None)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(tree)],
                   env=env, check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("trackmilter-*.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], env=env, check=True, capture_output=True, timeout=600)
    code = ("import trackmilter\n"
            f"assert trackmilter.__file__.startswith({str(target)!r}), trackmilter.__file__\n"
            "from trackmilter.rewrite import native, rewrite_message, RewriteOptions\n"
            "r = rewrite_message('text/html', None, b'<a href=\"http://a.example/\">a</a>',"
            " lambda i, u: 'https://t.example/c/1', None, RewriteOptions())\n"
            "print(native.ENGINE); print(r.body.decode()); print(native.NOTE)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(target)}, capture_output=True,
                          text=True, timeout=60, check=True)
    engine_name, body, note = proc.stdout.splitlines()
    assert engine_name == "python"
    assert body == '<a href="https://t.example/c/1">a</a>'
    assert "No module named 'trackmilter.rewrite._native'" in note
