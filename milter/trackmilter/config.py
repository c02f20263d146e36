"""TOML file + TRACKMILTER_<SECTION>_<KEY> environment → frozen settings; errors name the key and file."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import socket as _socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trackmilter.addresses import Network

DEFAULT_CONFIG = Path("/etc/trackmilter/trackmilter.toml")
ENV_PREFIX = "TRACKMILTER_"

class ConfigError(Exception):
    """A configuration problem; the message names the key and where it came from."""


@dataclass(frozen=True)
class MilterSettings:
    socket: str = "unix:/var/spool/postfix/trackmilter/milter.sock"
    outgoing_networks: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    sender_domains: tuple[str, ...] = ()
    max_message_size: int = 10 * 1024 * 1024
    # Bounces, read receipts and complaints larger than this are recorded but not decoded.
    report_max_size: int = 1024 * 1024
    # VERP (Postfix XVERP / sendmail -V): bounces to `sender+rcpt=domain@host` name the
    # original sender and recipient. "" = off; Postfix's default delimiters are "+=".
    verp_delimiters: str = ""
    optout_header: str = "X-Trackmilter-Opt-Out"
    # Headers recorded with each message (lower-cased), e.g. for `report --header`.
    record_headers: tuple[str, ...] = ("x-campaign",)
    # Bytes that buffered bodies and their rewriting may cost in all (trackmilter.mta.budget:
    # ~12 x body + 2 KiB a link; a 10 MiB body needs ~120 MiB). 0: no limit.
    memory_budget: int = 256 * 1024 * 1024
    # Seconds a message may wait in all for room in the budget; then it passes unmodified
    # (skip reason busy). libmilter's thread waits; keep it well below the MTA's timeouts.
    memory_wait: float = 5.0
    timeout: int = 600
    mta_name: str = field(default_factory=_socket.getfqdn)


@dataclass(frozen=True)
class TrackingSettings:
    base_url: str = ""
    secret_file: Path = Path("/etc/trackmilter/secret")
    rewrite_links: bool = True
    text_links: bool = False
    open_pixel: bool = True
    # A hidden link (index 0) that no person sees; whoever follows it is a machine.
    honeypot: bool = False
    excluded_domains: tuple[str, ...] = ()
    optout_attribute: str = "data-notrack"
    header: str = "X-Trackmilter-ID"
    read_receipts: bool = False
    # A test lab's switch: let the milter rewrite links to a reserved example domain.
    allow_reserved_base_url: bool = False


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:////var/lib/trackmilter/trackmilter.db"
    # PostgreSQL: the longest a daemon's statement may run (0: no limit), so that a lock
    # held elsewhere or a server that stopped answering sends events to the spool instead
    # of holding the writer. Not applied to `db upgrade` or the status/report commands.
    statement_timeout: float = 60.0


@dataclass(frozen=True)
class StoreSettings:
    spool_dir: Path = Path("/var/lib/trackmilter/spool")
    batch_size: int = 500
    flush_interval: float = 0.2
    retry_interval: float = 5.0
    # A database write taking longer is reported (store_unavailable) and interrupted: the
    # events wait in the journal and are replayed. 0: no client-side deadline.
    write_timeout: float = 30.0
    # On SIGTERM/SIGINT a daemon stops taking work, lets what is in flight finish and
    # stores what it holds for at most this long, then exits 0; what the database did not
    # take stays in the journal on disk for the next start. The systemd units'
    # TimeoutStopSec is this plus 10 s.
    stop_timeout: float = 20.0


@dataclass(frozen=True)
class MetricsSettings:
    listen: str = "127.0.0.1:9494"
    # Recipient domains counted on their own in delivery metrics (label provider); every
    # other domain is "other", so the label set stays small.
    providers: tuple[str, ...] = ("gmail.com", "googlemail.com", "outlook.com", "hotmail.com",
                                  "live.com", "yahoo.com", "icloud.com", "me.com", "aol.com",
                                  "gmx.de", "web.de", "orange.fr", "mail.ru", "yandex.ru")


@dataclass(frozen=True)
class WebhookEndpoint:
    url: str
    secret_file: Path
    events: tuple[str, ...] = ("delivery", "report", "hit")


@dataclass(frozen=True)
class WebhooksSettings:
    # Where events are POSTed (JSON, HMAC-SHA256 signed with the endpoint's secret).
    endpoints: tuple[WebhookEndpoint, ...] = ()
    timeout: float = 10.0
    max_attempts: int = 12
    backoff_initial: float = 5.0  # seconds; doubles per attempt
    backoff_max: float = 3600.0
    # `trackmilter webhooks`' own Prometheus endpoint.
    metrics_listen: str = "127.0.0.1:9496"


@dataclass(frozen=True)
class MaillogSettings:
    # "-" reads standard input: syslog lines, or the journal (journalctl -f -a -n all -o json
    # -u 'postfix@*' | trackmilter maillog -; Debian 12 runs Postfix as postfix@-.service).
    path: str = "/var/log/mail.log"
    format: str = "postfix"  # which MTA writes it: postfix | sendmail
    # Where the follower remembers how far it read (file identity and offset).
    state_file: Path = Path("/var/lib/trackmilter/maillog.state")
    poll_interval: float = 0.5
    # Its own Prometheus endpoint: it usually runs beside the milter on the same host.
    metrics_listen: str = "127.0.0.1:9495"
    # Which MTA host writes this log, to tie lines to messages when several share a store;
    # the same value as the milter's [milter] mta_name.
    mta_name: str = field(default_factory=_socket.getfqdn)


@dataclass(frozen=True)
class WebSettings:
    # `trackmilter web`: the tracker answering the links and pixels under [tracking] base_url.
    listen: str = "127.0.0.1:8081"
    workers: int = 1
    # Peers whose X-Forwarded-For / Forwarded headers are believed (the reverse proxy).
    trusted_proxies: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # The one header the trusted proxy sets: x-forwarded-for (nginx's usual) or forwarded.
    forwarded_header: str = "x-forwarded-for"
    # Bearer tokens for the read-only JSON API under /api/v1/ (one per line); "" = no API.
    api_token_file: str = ""
    # Look up clients' PTR names in the background (never on the response path); a name of
    # a known mail-security service labels the client's network for the verdict.
    reverse_dns: bool = False
    # Which tracker host answered, stored with every hit.
    name: str = field(default_factory=_socket.getfqdn)


@dataclass(frozen=True)
class EdgeSettings:
    # `trackmilter edge`: the hits nginx answered (conf/nginx/trackmilter-edge.conf), read
    # from its trackmilter_hits access log.
    log: Path = Path("/var/log/trackmilter/hits.log")
    # Where it remembers how far it read (file identity and offset).
    state_file: Path = Path("/var/lib/trackmilter/edge.state")
    poll_interval: float = 0.25
    metrics_listen: str = "127.0.0.1:9497"


@dataclass(frozen=True)
class NetworkSourceSettings:
    label: str
    format: str
    path: Path
    url: str = ""
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworksSettings:
    # IP range files whose label the verdict sees (apple-mpp, google, microsoft, ...).
    sources: tuple[NetworkSourceSettings, ...] = ()
    refresh_timeout: float = 30.0


@dataclass(frozen=True)
class VerdictSettings:
    # See trackmilter.verdict and the README for what each threshold means and its source.
    soon_after_delivery: float = 30.0
    burst_window: float = 10.0
    burst_links: int = 3
    group_prefix_v4: int = 24
    group_prefix_v6: int = 64
    apple_networks: tuple[str, ...] = ("apple-mpp", "apple")
    scanner_networks: tuple[str, ...] = (
        "microsoft", "o365", "google", "proofpoint", "mimecast", "barracuda", "scanner")
    proxy_networks: tuple[str, ...] = ("google", "yahoo")


@dataclass(frozen=True)
class PrivacySettings:
    # Prefix lengths of client addresses kept in storage (32 / 128 keep them whole;
    # 24 / 48 keep the network only). Verdicts are given before truncation.
    ipv4_prefix: int = 32
    ipv6_prefix: int = 128
    # `trackmilter purge` deletes what is older than this many days; 0 keeps everything.
    # A bounded store by default: ~0.42 GB per 1,000 messages a day at 90 days
    # (tests/benchmarks/bench_store_growth.py, docs/runbooks.md); 0 keeps everything.
    retention_days: int = 90


@dataclass(frozen=True)
class LogSettings:
    format: str = "auto"
    level: str = "info"
    # Replace email addresses in log lines by a stable pseudonym (sha256:…).
    hash_addresses: bool = False


@dataclass(frozen=True)
class Settings:
    milter: MilterSettings = field(default_factory=MilterSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    maillog: MaillogSettings = field(default_factory=MaillogSettings)
    web: WebSettings = field(default_factory=WebSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    verdict: VerdictSettings = field(default_factory=VerdictSettings)
    networks: NetworksSettings = field(default_factory=NetworksSettings)
    webhooks: WebhooksSettings = field(default_factory=WebhooksSettings)
    source: str = "<defaults>"


# --- value parsers: each takes the raw TOML or environment value, raises ValueError ---


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.lower() in ("1", "true", "yes", "on")
    raise ValueError(f"expected true or false, got {v!r}")


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(v, int):
        n = v
    elif isinstance(v, str):
        try:
            n = int(v.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {v!r}") from None
    else:
        raise ValueError(f"expected an integer, got {type(v).__name__}")
    if n < 0:
        raise ValueError(f"must not be negative, got {n}")
    return n


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"expected a number, got {v!r}")
    f = float(v)
    if f <= 0:
        raise ValueError(f"must be positive, got {f}")
    return f


def _seconds(v: Any, most: float, zero: str = "0") -> float:
    """A number of seconds from 0 (meaning ``zero``) to ``most``."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError(f"expected a number of seconds, got {v!r}")
    f = float(v)
    if not 0 <= f <= most:
        raise ValueError(f"must be {zero} or a number of seconds up to {most:.10g}, got {v!r}")
    return f


def _seconds_or_zero(v: Any) -> float:
    # PostgreSQL's largest statement_timeout (INT_MAX ms); above it every connection fails.
    return _seconds(v, 2_147_483, "0 (no limit)")


def _strlist(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):  # environment: comma-separated
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise ValueError("expected a list of strings")


def _domains(v: Any) -> tuple[str, ...]:
    return tuple(d.lower().strip(".") for d in _strlist(v))


def _networks(v: Any) -> tuple[Network, ...]:
    out = []
    for item in _strlist(v):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network in CIDR notation") from exc
    return tuple(out)


def _milter_socket(v: Any) -> str:
    s = _str(v)
    if s.startswith("unix:") or s.startswith("local:"):
        if not s.split(":", 1)[1].startswith("/"):
            raise ValueError(f"unix socket path must be absolute: {s!r}")
        return s
    if s.startswith("inet:") or s.startswith("inet6:"):
        port, _, host = s.split(":", 1)[1].partition("@")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port in {s!r}; expected inet:PORT@HOST")
        return s
    raise ValueError(f"expected unix:/path or inet:PORT@HOST, got {s!r}")


def _base_url(v: Any) -> str:
    s = _str(v).rstrip("/")
    if not s:
        return s
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"expected an http(s) URL without query or fragment, got {s!r}")
    return s


def _listen(v: Any) -> str:
    s = _str(v)
    if not s:
        return s
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (or empty to disable), got {s!r}")
    return s


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        s = _str(v).lower()
        if s not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}; got {v!r}")
        return s

    return parse


def _prefix(bits: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        n = _int(v)
        if not 0 <= n <= bits:
            raise ValueError(f"expected a prefix length from 0 to {bits}, got {n}")
        return n

    return parse


NETWORK_FORMATS = ("cidr", "apple-csv", "google-json", "microsoft-json", "o365-json")


def _tables(v: Any, what: str, keys: frozenset[str]) -> list[tuple[int, dict[str, Any]]]:
    """A list of TOML tables (or, from the environment, a JSON list), each with only `keys`;
    returned numbered from 1 for the error messages."""
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f"expected a JSON list of {what}s: {exc}") from exc
    if not isinstance(v, list):
        raise ValueError(f"expected a list of {{{', '.join(sorted(keys))}}} tables")
    out = []
    for n, item in enumerate(v, 1):
        if not isinstance(item, dict):
            raise ValueError(f"{what} {n}: expected a table, got {type(item).__name__}")
        unknown = set(item) - keys
        if unknown:
            raise ValueError(f"{what} {n}: unknown key(s) {', '.join(sorted(unknown))}")
        out.append((n, item))
    return out


def _network_sources(v: Any) -> tuple[NetworkSourceSettings, ...]:
    """A list of tables {label, format, path, url?, names?}; from the environment, JSON."""
    out = []
    for n, item in _tables(v, "source", frozenset({"label", "format", "path", "url", "names"})):
        try:
            label, fmt, path = _str(item["label"]), _str(item["format"]), _str(item["path"])
        except KeyError as exc:
            raise ValueError(f"source {n}: {exc.args[0]} is required") from exc
        if fmt not in NETWORK_FORMATS:
            raise ValueError(f"source {n}: format must be one of {', '.join(NETWORK_FORMATS)}; "
                             f"got {fmt!r}")
        if not label or not path:
            raise ValueError(f"source {n}: label and path must not be empty")
        out.append(NetworkSourceSettings(label, fmt, Path(path), _str(item.get("url", "")),
                                         _strlist(item.get("names", []))))
    return tuple(out)


WEBHOOK_EVENTS = ("delivery", "report", "hit")


def _webhook_endpoints(v: Any) -> tuple[WebhookEndpoint, ...]:
    """A list of tables {url, secret_file, events?}; from the environment, JSON."""
    out = []
    for n, item in _tables(v, "endpoint", frozenset({"url", "secret_file", "events"})):
        try:
            url, secret = _str(item["url"]), _str(item["secret_file"])
        except KeyError as exc:
            raise ValueError(f"endpoint {n}: {exc.args[0]} is required") from exc
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {n}: url must be http(s)://host/..., got {url!r}")
        events = _strlist(item.get("events", list(WEBHOOK_EVENTS)))
        bad = set(events) - set(WEBHOOK_EVENTS)
        if bad:
            raise ValueError(f"endpoint {n}: unknown event kind(s) {', '.join(sorted(bad))}; "
                             f"known: {', '.join(WEBHOOK_EVENTS)}")
        out.append(WebhookEndpoint(url, Path(secret), events))
    return tuple(out)


def _db_url(v: Any) -> str:
    s = _str(v)
    if not (s.startswith("sqlite:") or s.startswith("postgresql")):
        raise ValueError(f"expected a sqlite:/// or postgresql+psycopg:// URL, got {s!r}")
    return s


MIN_MEMORY_BUDGET = 1024 * 1024
MAX_MEMORY_WAIT = 60.0


def _memory_budget(v: Any) -> int:
    n = _int(v)
    if 0 < n < MIN_MEMORY_BUDGET:
        raise ValueError(f"expected 0 (no limit) or at least {MIN_MEMORY_BUDGET} bytes, got {n}")
    return n


def _memory_wait(v: Any) -> float:
    return _seconds(v, MAX_MEMORY_WAIT, "0 (no wait)")


def _verp_delimiters(v: Any) -> str:
    s = _str(v)
    if s and (len(s) != 2 or not s.isprintable() or "@" in s or " " in s):
        raise ValueError(f"expected two delimiter characters like \"+=\", got {s!r}")
    return s


def _header_name(v: Any) -> str:
    s = _str(v)
    if not s or any(c <= " " or c == ":" or c > "~" for c in s):
        raise ValueError(f"not a valid header field name: {s!r}")
    return s


SCHEMA: dict[str, tuple[type[Any], dict[str, Callable[[Any], Any]]]] = {
    "milter": (
        MilterSettings,
        {
            "socket": _milter_socket,
            "outgoing_networks": _networks,
            "sender_domains": _domains,
            "max_message_size": _int,
            "report_max_size": _int,
            "verp_delimiters": _verp_delimiters,
            "optout_header": _header_name,
            "record_headers": lambda v: tuple(_header_name(h).lower() for h in _strlist(v)),
            "memory_budget": _memory_budget,
            "memory_wait": _memory_wait,
            "timeout": _int,
            "mta_name": _str,
        },
    ),
    "tracking": (
        TrackingSettings,
        {
            "base_url": _base_url,
            "secret_file": lambda v: Path(_str(v)),
            "rewrite_links": _bool,
            "text_links": _bool,
            "open_pixel": _bool,
            "honeypot": _bool,
            "excluded_domains": _domains,
            "optout_attribute": _str,
            "header": _header_name,
            "read_receipts": _bool,
            "allow_reserved_base_url": _bool,
        },
    ),
    "database": (DatabaseSettings, {"url": _db_url, "statement_timeout": _seconds_or_zero}),
    "store": (
        StoreSettings,
        {
            "spool_dir": lambda v: Path(_str(v)),
            "batch_size": _int,
            "flush_interval": _float,
            "retry_interval": _float,
            "write_timeout": _seconds_or_zero,
            "stop_timeout": _float,
        },
    ),
    "metrics": (MetricsSettings, {"listen": _listen, "providers": _domains}),
    "webhooks": (
        WebhooksSettings,
        {
            "endpoints": _webhook_endpoints,
            "timeout": _float,
            "max_attempts": _int,
            "backoff_initial": _float,
            "backoff_max": _float,
            "metrics_listen": _listen,
        },
    ),
    "maillog": (
        MaillogSettings,
        {
            "path": _str,
            "format": _choice("postfix", "sendmail"),
            "state_file": lambda v: Path(_str(v)),
            "poll_interval": _float,
            "metrics_listen": _listen,
            "mta_name": _str,
        },
    ),
    "web": (
        WebSettings,
        {
            "listen": _listen,
            "workers": _int,
            "trusted_proxies": _networks,
            "forwarded_header": _choice("x-forwarded-for", "forwarded"),
            "api_token_file": _str,
            "reverse_dns": _bool,
            "name": _str,
        },
    ),
    "edge": (
        EdgeSettings,
        {
            "log": lambda v: Path(_str(v)),
            "state_file": lambda v: Path(_str(v)),
            "poll_interval": _float,
            "metrics_listen": _listen,
        },
    ),
    "privacy": (
        PrivacySettings,
        {
            "ipv4_prefix": _prefix(32),
            "ipv6_prefix": _prefix(128),
            "retention_days": _int,
        },
    ),
    "verdict": (
        VerdictSettings,
        {
            "soon_after_delivery": _float,
            "burst_window": _float,
            "burst_links": _int,
            "group_prefix_v4": _prefix(32),
            "group_prefix_v6": _prefix(128),
            "apple_networks": _strlist,
            "scanner_networks": _strlist,
            "proxy_networks": _strlist,
        },
    ),
    "networks": (
        NetworksSettings,
        {"sources": _network_sources, "refresh_timeout": _float},
    ),
    "log": (
        LogSettings,
        {
            "format": _choice("auto", "json", "console"),
            "level": _choice("debug", "info", "warning", "error"),
            "hash_addresses": _bool,
        },
    ),
}


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (None: defaults only) and apply environment overrides."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    where = "<defaults>"
    if path is not None:
        where = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return build(data, where, env)


def build(data: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Settings:
    for section, value in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"{where}: unknown section [{section}]")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key in value:
            if key not in SCHEMA[section][1]:
                raise ConfigError(f"{where}: unknown key '{key}' in [{section}]")
    for name in env:
        if name.startswith(ENV_PREFIX) and _env_target(name) is None:
            raise ConfigError(f"environment: unknown setting {name}")
        near = _near_section(name) if name.startswith(ENV_PREFIX) else None
        if near:
            raise ConfigError(f"environment: unknown setting {name}: did you mean "
                              f"{ENV_PREFIX}{near.upper()}_…?")

    sections: dict[str, Any] = {}
    for section, (cls, keys) in SCHEMA.items():
        values: dict[str, Any] = {}
        for key, parse in keys.items():
            env_name = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if env_name in env:
                raw, origin = env[env_name], f"environment variable {env_name}"
            elif key in data.get(section, {}):
                raw, origin = data[section][key], f"{where}: [{section}] {key}"
            else:
                continue
            try:
                values[key] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{origin}: {exc}") from exc
        sections[section] = cls(**values)
    return Settings(**sections, source=where)


def _near_section(name: str) -> str | None:
    """The section a TRACKMILTER_* variable naming none of ours was probably meant for
    (TRACKMILTER_MILTR_SOCKET: milter), so a typo is an error, not silently ignored;
    None for variables that are not configuration (TRACKMILTER_CONFIG, TRACKMILTER_ENGINE,
    a test suite's own)."""
    rest = name[len(ENV_PREFIX):].lower()
    if any(rest.startswith(section + "_") for section in SCHEMA):
        return None
    head = rest.split("_", 1)[0]
    close = difflib.get_close_matches(head, list(SCHEMA), n=1, cutoff=0.8)
    return close[0] if close and "_" in rest else None


def _env_target(name: str) -> tuple[str, str] | None:
    """The (section, key) a TRACKMILTER_* variable sets; None for a typo in a known section.

    Variables naming no section of ours (TRACKMILTER_CONFIG, a test suite's own settings)
    are not configuration and are left alone.
    """
    rest = name[len(ENV_PREFIX) :].lower()
    for section, (_, keys) in SCHEMA.items():
        if rest.startswith(section + "_"):
            key = rest[len(section) + 1 :]
            return (section, key) if key in keys else None
    return ("", "")
