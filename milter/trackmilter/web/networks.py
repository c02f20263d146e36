"""Labelled IP range lists (plain CIDR and the providers' published formats): load, look up, refresh.

Formats and where the providers publish them (`url` of a source; `refresh` fetches it):

| format | shape | published at |
|---|---|---|
| `cidr` | one prefix (or address) per line, `#` comments | anywhere |
| `apple-csv` | `prefix,country,region,city,` per line | https://mask-api.icloud.com/egress-ip-ranges.csv (iCloud Private Relay and Mail Privacy Protection egress) |
| `google-json` | `{"prefixes": [{"ipv4Prefix": …}, {"ipv6Prefix": …}]}` | https://www.gstatic.com/ipranges/goog.json, https://developers.google.com/static/search/apis/ipranges/user-triggered-fetchers-google.json |
| `microsoft-json` | Azure Service Tags `{"values": [{"name": …, "properties": {"addressPrefixes": […]}}]}`; `names` filters values (fnmatch) | https://www.microsoft.com/download/details.aspx?id=56519 (the file's URL changes weekly) |
| `o365-json` | `[{"serviceArea": …, "ips": […]}]`; `names` filters service areas | https://endpoints.office.com/endpoints/worldwide?clientrequestid=<uuid> |
"""

from __future__ import annotations

import fnmatch
import heapq
import ipaddress
import json
import os
import socket
import tempfile
import urllib.request
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from trackmilter.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Format = Literal["cidr", "apple-csv", "google-json", "microsoft-json", "o365-json"]
FORMATS: tuple[Format, ...] = ("cidr", "apple-csv", "google-json", "microsoft-json", "o365-json")
MAX_DOWNLOAD = 64 * 1024 * 1024  # Apple's CSV is ~10 MB, Azure's Service Tags ~4 MB


class NetworkFileError(Exception):
    """A range file that cannot be used; the message names the file and line."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


@dataclass(frozen=True)
class NetworkSource:
    label: str  # what the verdict sees, e.g. "apple-mpp", "google", "microsoft"
    format: Format
    path: Path
    url: str = ""  # where `refresh` downloads it from; "" for a hand-kept list
    names: tuple[str, ...] = ()  # microsoft-json value names / o365-json service areas


Prefix = tuple[int, int, int]  # (version, first, last) as integers


def _prefix(text: str, path: Path | str, line: int | None) -> Prefix:
    # inet_pton rather than ipaddress.ip_network: Apple's list has ~10^5 lines, and this is
    # several times faster while rejecting the same malformed input.
    address, slash, length = text.strip().partition("/")
    try:
        if ":" in address:
            version, bits, packed = 6, 128, socket.inet_pton(socket.AF_INET6, address)
        else:
            version, bits, packed = 4, 32, socket.inet_pton(socket.AF_INET, address)
        if slash and not (length.isascii() and length.isdigit() and int(length) <= bits):
            raise ValueError(length)
    except (OSError, ValueError) as exc:
        raise NetworkFileError(path, line, f"{text.strip()!r} is not an IP prefix") from exc
    host = bits - (int(length) if slash else bits)
    # Host bits set ("192.0.2.1/24") are common in hand-kept lists and harmless.
    first = int.from_bytes(packed, "big") >> host << host
    return version, first, first | ((1 << host) - 1)


def _lines(text: str, path: Path | str, comma: bool) -> Iterator[Prefix]:
    for n, raw in enumerate(text.splitlines(), 1):
        item = raw.split("#", 1)[0] if not comma else raw.split(",", 1)[0]
        if item.strip():
            yield _prefix(item, path, n)


def _line_of(text: str, value: Any) -> int | None:
    """Where a bad JSON value is, for the error message (only computed on error)."""
    i = text.find(json.dumps(value)) if isinstance(value, str) else -1
    return text.count("\n", 0, i) + 1 if i >= 0 else None


def _strings(text: str, path: Path | str, where: str, values: Any) -> Iterator[Prefix]:
    if not isinstance(values, list):
        raise NetworkFileError(path, None, f"{where} is not a list")
    for v in values:
        if not isinstance(v, str):
            raise NetworkFileError(path, _line_of(text, v), f"{where}: {v!r} is not a string")
        try:
            yield _prefix(v, path, None)
        except NetworkFileError as exc:
            raise NetworkFileError(path, _line_of(text, v), f"{where}: {v!r} is not an IP prefix"
                                   ) from exc


def _wanted(name: Any, names: Sequence[str]) -> bool:
    return not names or any(fnmatch.fnmatchcase(str(name), p) for p in names)


def parse(text: str, fmt: Format, path: Path | str = "<text>", names: Sequence[str] = ()
          ) -> list[Prefix]:
    """The prefixes of one file's text; NetworkFileError for anything malformed."""
    if fmt in ("cidr", "apple-csv"):
        return list(_lines(text, path, comma=fmt == "apple-csv"))
    if fmt not in FORMATS:
        raise NetworkFileError(path, None, f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NetworkFileError(path, exc.lineno, f"not JSON: {exc.msg}") from exc
    out: list[Prefix] = []
    if fmt == "google-json":
        prefixes = data.get("prefixes") if isinstance(data, dict) else None
        if not isinstance(prefixes, list):
            raise NetworkFileError(path, None, 'no "prefixes" list (google-json)')
        for item in prefixes:
            v = (item.get("ipv4Prefix") or item.get("ipv6Prefix")) if isinstance(item, dict) else None
            if v is None:
                raise NetworkFileError(path, None, f"prefixes: {item!r} has no ipv4Prefix/ipv6Prefix")
            out.extend(_strings(text, path, "prefixes", [v]))
    elif fmt == "microsoft-json":
        values = data.get("values") if isinstance(data, dict) else None
        if not isinstance(values, list):
            raise NetworkFileError(path, None, 'no "values" list (microsoft-json Service Tags)')
        for item in values:
            if not isinstance(item, dict) or not _wanted(item.get("name"), names):
                continue
            props = item.get("properties")
            if not isinstance(props, dict):
                raise NetworkFileError(path, _line_of(text, item.get("name")),
                                       f"{item.get('name')!r} has no properties")
            out.extend(_strings(text, path, f"{item.get('name')}.addressPrefixes",
                                props.get("addressPrefixes", [])))
    else:  # o365-json
        if not isinstance(data, list):
            raise NetworkFileError(path, None, "not a list of endpoint sets (o365-json)")
        for item in data:
            if isinstance(item, dict) and "ips" in item and _wanted(item.get("serviceArea"), names):
                out.extend(_strings(text, path, f"endpoint set {item.get('id')} ips", item["ips"]))
    return out


class NetworkSet:
    """Which labelled range an address is in: bisection over sorted, disjoint integer
    ranges per address family. Where sources overlap, the earlier source's label wins."""

    def __init__(self, ranges: Iterable[tuple[str, Prefix]] = ()) -> None:
        by_family: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for label, (version, first, last) in ranges:
            by_family[version].append((first, last, label))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        self._labels: dict[int, list[str]] = {}
        for version, items in by_family.items():
            self._starts[version], self._ends[version], self._labels[version] = _disjoint(items)

    @classmethod
    def load(cls, sources: Sequence[NetworkSource], *, missing_ok: bool = False) -> NetworkSet:
        """Read every source; a missing file is skipped only with `missing_ok` (a fresh host
        before its first refresh)."""
        ranges: list[tuple[str, Prefix]] = []
        for src in sources:
            try:
                text = src.path.read_text(encoding="utf-8-sig")
            except FileNotFoundError:
                if missing_ok:
                    continue
                raise NetworkFileError(src.path, None, f"missing (source {src.label!r})") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise NetworkFileError(src.path, None, f"cannot read: {exc}") from exc
            ranges.extend((src.label, p) for p in parse(text, src.format, src.path, src.names))
        return cls(ranges)

    def lookup(self, ip: IPAddress) -> str | None:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        starts = self._starts[ip.version]
        n = int(ip)
        i = bisect_right(starts, n) - 1
        if i >= 0 and n <= self._ends[ip.version][i]:
            return self._labels[ip.version][i]
        return None

    def __len__(self) -> int:
        return len(self._starts[4]) + len(self._starts[6])


def _disjoint(items: list[tuple[int, int, str]]) -> tuple[list[int], list[int], list[str]]:
    """(first, last, label) ranges in source order → sorted disjoint ranges, each labelled by the
    earliest source covering it, neighbours with one label merged. Linear after sorting:
    each label's ranges are merged, then fill only the gaps the labels before it left."""
    by_label: dict[str, list[tuple[int, int]]] = {}
    for first, last, label in items:
        by_label.setdefault(label, []).append((first, last))
    result: list[tuple[int, int, str]] = []
    for label, ranges in by_label.items():  # dicts keep first-seen, i.e. priority, order
        result = _fill(result, _merge(sorted(ranges)), label)
    starts: list[int] = []
    ends: list[int] = []
    labels: list[str] = []
    for first, last, label in result:
        if labels and labels[-1] == label and ends[-1] + 1 == first:
            ends[-1] = last
        else:
            starts.append(first)
            ends.append(last)
            labels.append(label)
    return starts, ends, labels


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for first, last in ranges:
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


def _fill(taken: list[tuple[int, int, str]], new: list[tuple[int, int]], label: str
          ) -> list[tuple[int, int, str]]:
    """`taken` plus the parts of `new` (sorted, disjoint) that `taken` does not cover."""
    if not taken:
        return [(first, last, label) for first, last in new]
    pieces: list[tuple[int, int, str]] = []
    i = 0
    for first, last in new:
        while i < len(taken) and taken[i][1] < first:
            i += 1
        cur, j = first, i
        while j < len(taken) and taken[j][0] <= last:
            if taken[j][0] > cur:
                pieces.append((cur, taken[j][0] - 1, label))
            cur = max(cur, taken[j][1] + 1)
            j += 1
        if cur <= last:
            pieces.append((cur, last, label))
    return list(heapq.merge(taken, pieces))


# --- refresh ---------------------------------------------------------------------------------
Fetch = Callable[[str, float], bytes]


def urllib_fetch(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "trackmilter-networks/1"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured URL
        data: bytes = resp.read(MAX_DOWNLOAD + 1)
    if len(data) > MAX_DOWNLOAD:
        raise ValueError(f"more than {MAX_DOWNLOAD} bytes")
    return data


@dataclass(frozen=True)
class Refreshed:
    label: str
    path: Path
    status: Literal["updated", "unchanged", "failed", "skipped"]
    prefixes: int = 0
    error: str = ""


def refresh(sources: Sequence[NetworkSource], fetch: Fetch = urllib_fetch,
            timeout: float = 30.0) -> list[Refreshed]:
    """Download every source that has a URL and replace its file atomically, only when the
    download parses and holds at least one prefix (a provider's empty or broken answer must
    not wipe a working list). One failure does not stop the others."""
    out = []
    for src in sources:
        if not src.url:
            out.append(Refreshed(src.label, src.path, "skipped"))
            continue
        try:
            data = fetch(src.url, timeout)
            text = data.decode("utf-8-sig")
            count = len(parse(text, src.format, src.url, src.names))
            if count == 0:
                raise NetworkFileError(src.url, None, "no prefixes (refusing to replace)")
            try:
                if src.path.read_bytes() == data:
                    out.append(Refreshed(src.label, src.path, "unchanged", count))
                    continue
            except FileNotFoundError:
                pass
            _replace(src.path, data)
        except (OSError, ValueError, NetworkFileError) as exc:  # URLError is an OSError
            out.append(Refreshed(src.label, src.path, "failed", error=str(exc)))
            continue
        out.append(Refreshed(src.label, src.path, "updated", count))
    return out


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # readers see the old file or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- from the settings -------------------------------------------------------------------

def sources_from(settings: Settings) -> list[NetworkSource]:
    return [NetworkSource(s.label, cast(Format, s.format), s.path, s.url, s.names)
            for s in settings.networks.sources]


def networks_from(settings: Settings) -> NetworkSet | None:
    """The configured lists; a file not downloaded yet is skipped (the tracker still starts,
    and `trackmilter networks refresh` fetches it), a malformed one is an error."""
    sources = sources_from(settings)
    return NetworkSet.load(sources, missing_ok=True) if sources else None


# Reverse DNS moved to trackmilter.web.rdns; kept importable from here.
from trackmilter.web.rdns import ReverseDNS as ReverseDNS  # noqa: E402
