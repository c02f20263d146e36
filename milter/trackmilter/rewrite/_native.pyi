from collections.abc import Callable

from trackmilter.rewrite.model import Link

def find_hrefs(data: bytes, optout: bytes, /) -> list[tuple[int, int]]: ...
def html_links(
    work: bytes, optout: bytes, codec: str, prefix: str, unescape: Callable[[str], str], /
) -> list[tuple[int, int, str]]: ...
def qp_splice(
    raw: bytes, decoded: bytes, edits: list[tuple[int, int, bytes]], eol: bytes, /
) -> bytes | None: ...
def link_edits(
    work: bytes,
    candidates: list[tuple[int, int, str]],
    first: int,
    linker: Callable[[int, str], str],
    html: bool,
    leaf: int,
    kind: str,
    tracks: Callable[[str], bool] | None,
    link: type[Link],
    check: Callable[[str, str], str],
    /,
) -> tuple[list[tuple[int, int, bytes]], list[Link]]: ...
def a2b_qp(data: bytes, /) -> bytes: ...
def b2a_qp(data: bytes, istext: bool = True, /) -> bytes: ...
def qp_encode(data: bytes, eol: bytes, /) -> bytes: ...
