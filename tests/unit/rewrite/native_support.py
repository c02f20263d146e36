"""Running the native and the Python engine side by side (the differential tests)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from trackmilter.rewrite import Link, RewriteOptions, RewriteResult, engine, native

NATIVE = native.try_extension()
CALLS: Counter[str] = Counter()  # pieces compared, by name (printed by the identity tests)


def _same(name: str, python: Callable[..., Any], other: Callable[..., Any], *args: Any) -> Any:
    """Call both; the same result or the same exception (type and message), else fail."""
    CALLS[name] += 1
    try:
        want = python(*args)
    except Exception as exc:  # noqa: BLE001 - compared below
        try:
            other(*args)
        except Exception as got:  # noqa: BLE001
            assert (type(got), str(got)) == (type(exc), str(exc)), (name, args)
            raise
        raise AssertionError(f"{name}: python raised {exc!r}, native did not: {args!r}") from exc
    got = other(*args)
    assert got == want, (name, args, want, got)
    return want


@contextlib.contextmanager
def differential() -> Iterator[None]:
    """Make rewrite_message's active engine compare each native piece with its Python
    twin (a no-op when the extension is not built)."""
    if "native" not in engine.ENGINES:
        yield
        return
    py, nat = engine.ENGINES["python"], engine.ENGINES["native"]

    def html_links(*args: Any) -> Any:
        return _same("html_links", py.html_links, nat.html_links, *args)

    def qp_splice(*args: Any) -> Any:
        return _same("qp_splice", py.qp_splice, nat.qp_splice, *args)

    def link_edits(*args: Any) -> Any:
        # The linker is called by both: the rewrite tests' linkers are pure functions.
        return _same("link_edits", py.link_edits, nat.link_edits, *args)

    def qp_decode(*args: Any) -> Any:
        return _same("qp_decode", py.qp_decode, nat.qp_decode, *args)

    def qp_encode(*args: Any) -> Any:
        return _same("qp_encode", py.qp_encode, nat.qp_encode, *args)

    saved = engine._ACTIVE
    engine._ACTIVE = engine._Ops(
        "differential", html_links, link_edits, qp_splice, qp_decode, qp_encode
    )
    try:
        yield
    finally:
        engine._ACTIVE = saved


def both(
    content_type: str | None,
    cte: str | None,
    body: bytes,
    linker: Callable[[int, str], str],
    pixel_url: str | None,
    options: RewriteOptions,
    honeypot_url: str | None = None,
) -> RewriteResult | None:
    """The whole message through each engine on its own; asserts the same result (or the
    same exception) and returns it (None: the native engine is not built)."""
    if NATIVE is None:
        return None
    results: list[Any] = []
    for name in ("python", "native"):
        try:
            results.append(
                engine.rewrite_message_with(
                    name, content_type, cte, body, linker, pixel_url, options, honeypot_url
                )
            )
        except Exception as exc:  # noqa: BLE001 - compared below
            results.append((type(exc), str(exc)))
    CALLS["messages"] += 1
    want, got = results
    assert got == want, (content_type, cte, body[:200])
    return want if isinstance(want, RewriteResult) else None


def declining_linker(index: int, url: str) -> str:
    """Tracks most links, declines some (a deterministic choice), as the signer does."""
    if len(url) % 7 == 3:
        return url
    return f"https://t.example/c/{index}?u={len(url)}&k=1"


def links_of(result: RewriteResult | None) -> tuple[Link, ...]:
    return () if result is None else result.links
