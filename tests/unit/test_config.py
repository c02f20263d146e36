"""Configuration: TOML + environment, and errors that name the key and the file."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from trackmilter.config import ConfigError, load

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tm.toml"
    p.write_text(text)
    return p


def test_defaults_without_file() -> None:
    s = load(None, environ={})
    assert s.database.url == "sqlite:////var/lib/trackmilter/trackmilter.db"
    assert s.milter.outgoing_networks == (ipaddress.ip_network("127.0.0.0/8"),
                                          ipaddress.ip_network("::1/128"))
    assert s.tracking.open_pixel is True and s.tracking.text_links is False


def test_shipped_example_loads() -> None:
    s = load(REPO / "conf" / "trackmilter.toml", environ={})
    assert s.milter.socket == "unix:/var/spool/postfix/trackmilter/milter.sock"
    # Shipped empty: record-only until the admin names the tracker (never an example domain).
    assert s.tracking.base_url == ""


def test_the_milter_refuses_a_reserved_example_domain(tmp_path: Path) -> None:
    from trackmilter.daemon import StartupError, load_signer, reserved_host

    for host in ("t.example.com", "example.org", "t.example", "mail.test", "x.invalid",
                 "localhost", "T.EXAMPLE.NET."):
        assert reserved_host(host), host
    for host in ("t.example.de", "myexample.com", "examples.org", "t.shop.example.co.uk"):
        assert not reserved_host(host), host
    key = tmp_path / "secret"
    key.write_text("k" * 32 + "\n")
    cfg = tmp_path / "tm.toml"
    cfg.write_text(f'[tracking]\nbase_url = "https://t.example.com"\nsecret_file = "{key}"\n')
    with pytest.raises(StartupError, match=r"\[tracking\] base_url = 'https://t.example.com' "
                       "is a reserved example domain"):
        load_signer(load(cfg, environ={}))
    lab = load(cfg, environ={"TRACKMILTER_TRACKING_ALLOW_RESERVED_BASE_URL": "true"})
    assert load_signer(lab) is not None
    gone = load(cfg, environ={"TRACKMILTER_TRACKING_BASE_URL": "https://t.shop.test.de",
                              "TRACKMILTER_TRACKING_SECRET_FILE": str(tmp_path / "none")})
    with pytest.raises(StartupError, match=r"\[tracking\] secret_file = .*none.*cannot read"):
        load_signer(gone)


def test_file_values(tmp_path: Path) -> None:
    p = _write(tmp_path, """
[milter]
socket = "inet:8894@127.0.0.1"
outgoing_networks = ["10.0.0.0/8"]
sender_domains = ["Example.COM."]
[tracking]
base_url = "https://t.example.net/"
excluded_domains = ["Foo.example"]
[metrics]
listen = ""
""")
    s = load(p, environ={})
    assert s.milter.socket == "inet:8894@127.0.0.1"
    assert s.milter.sender_domains == ("example.com",)
    assert s.tracking.base_url == "https://t.example.net"
    assert s.tracking.excluded_domains == ("foo.example",)
    assert s.metrics.listen == ""
    assert s.source == str(p)


def test_statement_timeout_zero_means_none(tmp_path: Path) -> None:
    assert load(None, environ={}).database.statement_timeout == 60.0
    s = load(_write(tmp_path, "[database]\nstatement_timeout = 0\n"), environ={})
    assert s.database.statement_timeout == 0.0


def test_environment_overrides_file(tmp_path: Path) -> None:
    p = _write(tmp_path, '[log]\nlevel = "info"\n')
    s = load(p, environ={"TRACKMILTER_LOG_LEVEL": "debug",
                         "TRACKMILTER_MILTER_OUTGOING_NETWORKS": "192.0.2.0/24, 2001:db8::/32",
                         "TRACKMILTER_TRACKING_OPEN_PIXEL": "false"})
    assert s.log.level == "debug"
    assert len(s.milter.outgoing_networks) == 2
    assert s.tracking.open_pixel is False


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        pytest.param('[milter]\nsockt = "x"\n', {}, r"tm\.toml: unknown key 'sockt' in \[milter\]",
                     id="unknown-key"),
        pytest.param('[miltr]\n', {}, r"tm\.toml: unknown section \[miltr\]", id="unknown-section"),
        pytest.param('[milter]\nsocket = "tcp:1"\n', {}, r"tm\.toml: \[milter\] socket: expected",
                     id="bad-socket"),
        pytest.param('[milter]\nmax_message_size = "big"\n', {},
                     r"\[milter\] max_message_size", id="bad-int"),
        pytest.param('[milter]\noutgoing_networks = ["10.0.0.300/8"]\n', {},
                     r"\[milter\] outgoing_networks: '10.0.0.300/8' is not a network",
                     id="bad-cidr"),
        pytest.param('[tracking]\nbase_url = "ftp://x"\n', {}, r"\[tracking\] base_url",
                     id="bad-base-url"),
        pytest.param('[log]\nformat = "xml"\n', {}, r"\[log\] format: expected one of",
                     id="bad-choice"),
        pytest.param("[log\n", {}, r"tm\.toml: not valid TOML", id="bad-toml"),
        pytest.param("[database]\nstatement_timeout = -1\n", {},
                     r"\[database\] statement_timeout: must be 0 \(no limit\)",
                     id="negative-timeout"),
        pytest.param("[database]\nstatement_timeout = 1e7\n", {},
                     r"\[database\] statement_timeout: must be 0 \(no limit\) or a number "
                     r"of seconds up to 2147483", id="timeout-beyond-postgresql"),
        pytest.param("", {"TRACKMILTER_DATABASE_STATEMENT_TIMEOUT": "nan"},
                     r"TRACKMILTER_DATABASE_STATEMENT_TIMEOUT: must be 0",
                     id="nan-timeout"),
        pytest.param('[milter]\nverp_delimiters = "+"\n', {},
                     r"\[milter\] verp_delimiters: expected two delimiter", id="bad-verp"),
        pytest.param('[maillog]\nformat = "exim"\n', {}, r"\[maillog\] format: expected one of",
                     id="bad-maillog-format"),
        pytest.param("", {"TRACKMILTER_LOG_LEVL": "x"}, r"unknown setting TRACKMILTER_LOG_LEVL",
                     id="unknown-env"),
        pytest.param("", {"TRACKMILTER_TRACKING_OPEN_PIXEL": "maybe"},
                     r"environment variable TRACKMILTER_TRACKING_OPEN_PIXEL: expected true",
                     id="bad-env-bool"),
    ],
)
def test_errors_name_key_and_file(tmp_path: Path, text: str, env: dict[str, str],
                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_write(tmp_path, text), environ=env)


def test_foreign_trackmilter_variables_ignored(tmp_path: Path) -> None:
    s = load(None, environ={"TRACKMILTER_CONFIG": "/x", "TRACKMILTER_TEST_PG_URL": "postgresql://"})
    assert s.log.level == "info"


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml: cannot read"):
        load(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(("text", "needle"), [
    pytest.param('[webhooks]\nendpoints = [{ url = "ftp://x", secret_file = "/k" }]',
                 "endpoint 1: url must be http(s)", id="scheme"),
    pytest.param('[webhooks]\nendpoints = [{ url = "https://x.example/" }]',
                 "endpoint 1: secret_file is required", id="no-secret"),
    pytest.param('[webhooks]\nendpoints = [{ url = "https://x.example/", secret_file = "/k", '
                 'events = ["opens"] }]', "unknown event kind(s) opens", id="event-kind"),
    pytest.param('[webhooks]\nendpoints = ["https://x.example/"]',
                 "endpoint 1: expected a table", id="not-a-table"),
])
def test_webhook_endpoint_errors_name_key_and_file(tmp_path: Path, text: str,
                                                   needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, text), environ={})
    assert needle in str(info.value) and "[webhooks] endpoints" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_webhook_endpoints_from_toml_and_environment(tmp_path: Path) -> None:
    s = load(_write(tmp_path, '[webhooks]\nendpoints = [{ url = "https://a.example/h", '
                              'secret_file = "/k", events = ["hit"] }]'), environ={})
    (e,) = s.webhooks.endpoints
    assert (e.url, str(e.secret_file), e.events) == ("https://a.example/h", "/k", ("hit",))
    env = {"TRACKMILTER_WEBHOOKS_ENDPOINTS":
           '[{"url": "https://b.example/", "secret_file": "/k2"}]'}
    (e,) = load(None, environ=env).webhooks.endpoints
    assert e.events == ("delivery", "report", "hit")
