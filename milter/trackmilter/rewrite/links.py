"""Which link targets get tracked: URL normalisation, scheme, tracker prefix, excluded hosts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from trackmilter.rewrite.model import RewriteOptions

__all__ = ["LinkPolicy", "check_replacement", "host_of", "is_http", "normalize"]

# WHATWG URL parsing strips leading/trailing C0 controls and spaces and removes every
# tab and newline inside, so `href=" http://a/\n b"` goes to http://a/b.
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_HTTP = re.compile(r"https?://", re.I)
_AUTHORITY_END = re.compile(r"[/?#\\]")
# What the linker and the pixel URL may contain: printable ASCII that can stand in a quoted
# or unquoted HTML attribute value and in plain text without escaping ('&' is escaped).
_REPLACEMENT = re.compile(r"[!#-&(-;=?-~]+")


def normalize(url: str) -> str:
    """The URL a browser would follow for this attribute value (after entity decoding)."""
    url = url.strip(_C0_AND_SPACE)
    # str.translate walks the string in Python-level steps: only when there is work for it.
    if "\t" in url or "\n" in url or "\r" in url:
        url = url.translate(_TAB_NEWLINE)
    return url


def is_http(url: str) -> bool:
    """Whether `url` starts with http:// or https:// (any case, as a browser reads it)."""
    return _HTTP.match(url) is not None


def host_of(url: str) -> str:
    """Lower-cased host of an absolute http(s) URL, without userinfo, port or final dot."""
    rest = url[url.index("//") + 2 :]
    m = _AUTHORITY_END.search(rest)
    authority = rest[: m.start()] if m else rest
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    else:
        host = host.partition(":")[0]
    return host.lower().rstrip(".")


@dataclass(frozen=True)
class LinkPolicy:
    """The options that decide whether a URL is tracked, prepared once per message."""

    tracker_prefix: str
    excluded: tuple[str, ...]
    excluded_suffixes: tuple[str, ...]

    @classmethod
    def from_options(cls, options: RewriteOptions) -> LinkPolicy:
        domains = sorted({d.strip().lower().strip(".") for d in options.excluded_domains} - {""})
        return cls(
            options.tracker_prefix,
            tuple(domains),
            tuple("." + d for d in domains),
        )

    def tracks(self, url: str) -> bool:
        """True for an absolute http(s) URL that is neither tracked already nor excluded."""
        if _HTTP.match(url) is None:
            return False
        if self.tracker_prefix and url.startswith(self.tracker_prefix):
            return False
        if self.excluded:
            host = host_of(url)
            if host in self.excluded or host.endswith(self.excluded_suffixes):
                return False
        return True


def check_replacement(url: str, what: str) -> str:
    """Reject a tracking/pixel URL that would need escaping: that is a caller's bug."""
    if not isinstance(url, str) or _REPLACEMENT.fullmatch(url) is None:
        raise ValueError(
            f"{what} must be printable ASCII without quotes, '<', '>' or spaces: {url!r}"
        )
    return url
