"""Every shipped file, loaded as shipped by the program that reads it in production.

- conf/nginx/*.conf: `nginx -t` (Debian 12's nginx 1.22 with Debian's Lua module), in a
  throwaway prefix, each file included in an http block as /etc/nginx/conf.d/ would be;
  and, since `nginx -t` does not run init_by_lua, nginx serving the edge file (its port
  changed) with the shipped Lua module and a key file;
- conf/postfix/main.cf.snippet: `postconf -c DIR` and `postfix -c DIR check` on a private
  configuration directory (nothing in /etc/postfix is read or changed);
- conf/sendmail/trackmilter.mc: m4 with Debian's sendmail-cf, then Sendmail itself reads the
  sendmail.cf it made (`sendmail -C CF -bt`), both from what scripts/setup unpacked;
- systemd/*: `systemd-analyze verify`, as scripts/install writes them (its PREFIX: this
  virtualenv, so that every ExecStart= names a program that exists);
- conf/trackmilter.toml: our own loader, and the paths it shares with the files above.

Only absolute paths are rewritten (certificates, key file, logs; and the edge's listen
port where nginx runs), and a path the test does not provide fails the test instead of
being quietly ignored. Every other byte is the shipped one.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackmilter.config import load
from trackmilter.model import new_tracking_id
from trackmilter.tokens import Signer
from trackmilter.web.edge import parse_line
from trackmilter_lab import child, free_port
from trackmilter_lab.postfix import PostfixInstance, postfix_available
from trackmilter_lab.sendmail import SENDMAIL_HOME

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
NGINX = "/usr/sbin/nginx"
NGINX_MODULES = Path("/usr/lib/nginx/modules")
# What Debian's libnginx-mod-http-lua (and its dependency libnginx-mod-http-ndk) install:
# the load_module lines /etc/nginx/modules-enabled/ links to, relative to nginx's prefix.
DEBIAN_MODULE_CONFS = [Path("/usr/share/nginx/modules-available/mod-http-ndk.conf"),
                       Path("/usr/share/nginx/modules-available/mod-http-lua.conf")]
# Comments and absolute paths in an nginx file: a path the test does not map is an error.
_NGINX_COMMENT = re.compile(r"(?m)(^|\s)#.*$")
_ABSOLUTE = re.compile(r"(?<![\w/.])/(?:etc|var|run|usr|opt|srv|home)/[^\s;\"')]+")


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL, check=False)


# -- nginx ------------------------------------------------------------------------------

def _nginx_missing() -> str | None:
    if not Path(NGINX).exists():
        return "nginx is not installed (scripts/setup installs nginx)"
    if not all(p.exists() for p in DEBIAN_MODULE_CONFS) \
            or not (NGINX_MODULES / "ngx_http_lua_module.so").exists():
        return "Debian's libnginx-mod-http-lua is not installed (scripts/setup installs it)"
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    return None


@pytest.fixture
def nginx_prefix(tmp_path: Path) -> Path:
    """A throwaway nginx prefix: Debian's module directory, a self-signed certificate for
    the shipped server_name, a key file, a log directory."""
    missing = _nginx_missing()
    if missing:
        pytest.skip(missing)
    p = tmp_path / "nginx"
    (p / "conf.d").mkdir(parents=True)
    (p / "logs").mkdir()
    (p / "modules").symlink_to(NGINX_MODULES)  # Debian's `load_module modules/...` lines
    made = _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                 "-subj", "/CN=t.example.com", "-keyout", str(p / "cert.key"),
                 "-out", str(p / "cert.pem")])
    assert made.returncode == 0, made.stderr
    (p / "secret").write_text("0123456789abcdef0123456789abcdef\n")
    return p


def _nginx_paths(p: Path) -> dict[str, str]:
    """Each absolute path the shipped nginx files may name -> its stand-in in prefix `p`."""
    return {
        "/etc/nginx/trackmilter/": f"{CONF / 'nginx'}/",  # lua_package_path: the shipped Lua
        "/etc/trackmilter/secret": str(p / "secret"),
        "/etc/ssl/certs/t.example.com.pem": str(p / "cert.pem"),
        "/etc/ssl/private/t.example.com.key": str(p / "cert.key"),
        "/var/log/trackmilter/": f"{p / 'logs'}/",
    }


def _nginx_install(p: Path, name: str, text: str | None = None, extra: str = "") -> Path:
    """Install conf/nginx/NAME (or `text` under that name) into prefix `p` with its paths
    mapped, included in an http block as Debian's nginx.conf includes conf.d/*.conf;
    returns the nginx.conf to give to nginx (`extra`: main-context lines)."""
    if text is None:
        text = (CONF / "nginx" / name).read_text()
    paths = _nginx_paths(p)
    named = set(_ABSOLUTE.findall(_NGINX_COMMENT.sub("", text)))
    unmapped = {n for n in named if not any(n.startswith(k) for k in paths)}
    assert not unmapped, f"{name} names paths this test does not provide: {unmapped}"
    for shipped, here in paths.items():
        text = text.replace(shipped, here)
    (p / "conf.d" / name).write_text(text)
    includes = "".join(f"include {c};\n" for c in DEBIAN_MODULE_CONFS)
    (p / "nginx.conf").write_text(f"""\
{includes}{extra}pid {p}/nginx.pid;
events {{ }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    include {p}/conf.d/*.conf;
}}
""")
    return p / "nginx.conf"


def _nginx_t(p: Path, name: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on conf/nginx/NAME (or `text`) installed in prefix `p`."""
    conf = _nginx_install(p, name, text)
    return _run([NGINX, "-t", "-p", f"{p}/", "-c", str(conf), "-e", str(p / "error.log")])


@pytest.mark.parametrize("name", ["trackmilter-edge.conf", "trackmilter-web.conf"])
def test_nginx_loads_the_shipped_file(nginx_prefix: Path, name: str) -> None:
    done = _nginx_t(nginx_prefix, name)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "test is successful" in out, out
    # A warning is a trap too (a deprecated directive, a conflicting server name).
    assert "[warn]" not in out and "[emerg]" not in out, out


def test_nginx_t_fails_on_a_directive_debian_12_lacks(nginx_prefix: Path) -> None:
    """The check above can fail: nginx 1.22 refuses `http2 on;` (nginx >= 1.25.1 only)."""
    shipped = (CONF / "nginx" / "trackmilter-web.conf").read_text()
    newer = shipped.replace("listen 443 ssl http2;", "listen 443 ssl;\n    http2 on;", 1)
    assert newer != shipped
    done = _nginx_t(nginx_prefix, "trackmilter-web.conf", newer)
    assert done.returncode != 0
    assert 'unknown directive "http2"' in done.stderr


def test_nginx_runs_the_shipped_edge_file(nginx_prefix: Path) -> None:
    """`nginx -t` does not run init_by_lua: start nginx on the shipped edge file (only its
    port changed, the IPv6 listen dropped) so that its lua_package_path, its require and
    its key file load are exercised, answer a click and a pixel, and leave the hit lines
    `trackmilter edge` reads."""
    port = free_port()
    shipped = (CONF / "nginx" / "trackmilter-edge.conf").read_text()
    v4, v6 = "    listen 443 ssl http2;\n", "    listen [::]:443 ssl http2;\n"
    assert v4 in shipped and v6 in shipped
    text = shipped.replace(v4, f"    listen 127.0.0.1:{port} ssl http2;\n").replace(v6, "")
    user = "user root;\n" if os.geteuid() == 0 else ""  # the workers write in tmp_path
    conf = _nginx_install(nginx_prefix, "trackmilter-edge.conf", text, extra=user)
    errors = nginx_prefix / "error.log"
    proc = subprocess.Popen([NGINX, "-p", f"{nginx_prefix}/", "-c", str(conf), "-e",
                             str(errors), "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    tls = ssl.create_default_context(cafile=str(nginx_prefix / "cert.pem"))
    tls.check_hostname = False  # the certificate names t.example.com, we dial 127.0.0.1

    def get(path: str) -> tuple[int, str | None]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls)
        try:
            conn.request("GET", path, headers={"Host": "t.example.com",
                                               "User-Agent": "shipped-files-test/1"})
            answer = conn.getresponse()
            answer.read()
            return answer.status, answer.getheader("Location")
        finally:
            conn.close()

    def serving() -> bool:
        try:
            return get("/")[0] == 404
        except OSError:
            return False

    try:
        child.wait_serving(proc, serving, 15, what="nginx on the shipped edge file",
                           said=lambda: child.output(errors), interval=0.05)
        signer = Signer.from_file(nginx_prefix / "secret")
        tid = new_tracking_id()
        url = "https://shop.example.com/spring?utm_source=news"
        click, pixel = signer.sign_click(tid, 1, url), signer.sign_open(tid)
        assert get(f"/c/{click}") == (302, url)
        assert get(f"/o/{pixel}")[0] == 200
        assert get(f"/c/{click[:-2]}")[0] == 404  # a token that does not verify
    finally:
        child.end(proc, signal.SIGQUIT)  # graceful: nginx writes its buffered log lines
    assert "trackmilter:" not in child.output(errors), child.output(errors)
    lines = (nginx_prefix / "logs" / "hits.log").read_text().splitlines()
    hits = [parse_line(line) for line in lines]
    assert [(h.path, h.status) for h in hits if h is not None] == [
        (f"/c/{click}", 302), (f"/o/{pixel}", 200), (f"/c/{click[:-2]}", 404)]


# -- Postfix ----------------------------------------------------------------------------

SNIPPET = CONF / "postfix" / "main.cf.snippet"
# Postfix 3.7's per-milter settings (MILTER_README, "Different settings for different milter
# applications"), and the values default_action takes.
PER_MILTER = {"command_timeout", "connect_timeout", "content_timeout", "default_action",
              "protocol"}
DEFAULT_ACTIONS = {"accept", "reject", "tempfail", "quarantine"}


def _snippet_settings() -> dict[str, str]:
    """name -> value of the snippet's settings, as written (no continuation lines used)."""
    out = {}
    for line in SNIPPET.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert not line[0].isspace(), f"a continuation line in the snippet: {line!r}"
        name, eq, value = line.partition("=")
        assert eq, line
        out[name.strip()] = value.strip()
    return out


@pytest.fixture
def postfix_dir() -> Iterator[PostfixInstance]:
    """A private Postfix configuration (never started) whose main.cf ends with the snippet."""
    if not postfix_available():
        pytest.skip("Postfix is not installed (scripts/setup installs it)")
    instance = PostfixInstance()
    try:
        instance.write_config()
        names = set(_snippet_settings())
        # The lab's own milter settings give way to the snippet's (a parameter set twice
        # is not reported: the later one wins), so none of them is left behind.
        base = {k: v for k, v in instance.main_cf().items()
                if k not in names and "milter" not in k}
        (instance.config_dir / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in base.items()) + SNIPPET.read_text())
        yield instance
    finally:
        instance.cleanup()


def test_postfix_reads_the_snippet_as_written(postfix_dir: PostfixInstance) -> None:
    cfg = str(postfix_dir.config_dir)
    shown = _run(["postconf", "-c", cfg, "-n"])
    # A misspelt parameter is "warning: ...: unused parameter"; nothing may be said.
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    for name, value in _snippet_settings().items():
        got = _run(["postconf", "-c", cfg, "-h", name])
        assert got.returncode == 0 and got.stderr == "", (name, got.stderr)
        assert got.stdout.rstrip("\n") == value, name
    expanded = _run(["postconf", "-c", cfg, "-x", "-h", "non_smtpd_milters"]).stdout.strip()
    assert expanded == _snippet_settings()["smtpd_milters"]
    check = _run(["postfix", "-c", cfg, "check"])
    assert check.returncode == 0, check.stderr
    assert check.stdout + check.stderr == "", check.stdout + check.stderr


def test_the_snippets_per_milter_settings_are_well_formed() -> None:
    """What `postfix check` does not see: `default_action = tempfail` (spaces) inside the
    braces is accepted by postconf and postfix check, then kills every smtpd at its first
    connection ("fatal: malformed option"). Postfix 3.7 splits on commas and spaces."""
    milters = _snippet_settings()["smtpd_milters"]
    braced = re.findall(r"\{([^{}]*)\}", milters)
    assert len(braced) == 1, milters
    name, *options = [part.strip() for part in braced[0].split(",")]
    assert name == "unix:trackmilter/milter.sock"
    assert options, "no per-milter default_action: the global one would apply"
    for option in options:
        assert re.fullmatch(r"[a-z_]+=\S+", option), f"malformed per-milter option {option!r}"
        key, _, value = option.partition("=")
        assert key in PER_MILTER, key
        if key == "default_action":
            assert value in DEFAULT_ACTIONS, value
    assert "default_action=tempfail" in options  # what the README promises


# -- Sendmail ---------------------------------------------------------------------------

SENDMAIL_ROOT = SENDMAIL_HOME / "root"
MC = CONF / "sendmail" / "trackmilter.mc"


def test_sendmail_builds_and_reads_a_cf_with_the_shipped_lines(tmp_path: Path) -> None:
    m4 = SENDMAIL_ROOT / "usr/bin/m4"
    cf_m4 = SENDMAIL_ROOT / "usr/share/sendmail/cf/m4/cf.m4"
    sendmail = SENDMAIL_ROOT / "usr/libexec/sendmail/sendmail"
    if not (m4.exists() and cf_m4.exists() and sendmail.exists()):
        pytest.skip(f"Sendmail's packages are not unpacked under {SENDMAIL_HOME} "
                    "(scripts/setup does it)")
    # The shape of a Debian sendmail.mc, with the shipped lines where the README says.
    mc = tmp_path / "sendmail.mc"
    mc.write_text(f"include(`{cf_m4}')dnl\nOSTYPE(`linux')dnl\n"
                  f"include(`{MC}')dnl\nMAILER(`local')dnl\nMAILER(`smtp')dnl\n")
    built = _run([str(m4), str(mc)])
    assert built.returncode == 0 and built.stderr == "", built.stderr  # m4 says nothing
    cf = tmp_path / "sendmail.cf"
    cf.write_text(built.stdout)
    assert "Xtrackmilter, S=local:/run/trackmilter/milter.sock, T=S:30s;R:2m;E:5m\n" \
        in built.stdout
    assert re.search(r"(?m)^O InputMailFilters=trackmilter$", built.stdout)
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("Sendmail reading the .cf needs root and unshare (a dotted host name)")
    # Sendmail parses the .cf (a bad X= field is "unknown filter timeout", exit 70) and,
    # with -d64.5, says what it made of the filter and the macro lists. Its own UTS
    # namespace: on a host name without a dot it would sleep a minute first.
    env = {**os.environ, "LD_LIBRARY_PATH": f"{SENDMAIL_ROOT}/usr/lib/x86_64-linux-gnu"}
    read = _run(["unshare", "-u", "sh", "-c", "hostname sendmail-lab.test; exec "
                 f"{sendmail} -C {cf} -bt -d64.5"], env=env)
    out = read.stdout + read.stderr
    assert read.returncode == 0, out
    assert f"{cf}: line" not in out, out  # how Sendmail reports a line it refuses
    for timeout in ("Xtrackmilter: S=30", "Xtrackmilter: R=120", "Xtrackmilter: E=300"):
        assert timeout in out, out
    envfrom = re.search(r"macros\.envfrom = (.*)\)", out)
    eom = re.search(r"macros\.eom = (.*)\)", out)
    assert envfrom and "{auth_authen}" in envfrom.group(1).split(", "), out
    assert eom and "i" in eom.group(1).split(", "), out  # the queue id at end of message


# -- systemd ----------------------------------------------------------------------------

UNITS = sorted(p for p in (REPO / "systemd").iterdir()
               if p.suffix in (".service", ".timer"))


@pytest.fixture(scope="module")
def installed_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as scripts/install writes them (its sed of /opt/trackmilter/), with this
    virtualenv as PREFIX: every ExecStart= then names a program that exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    prefix = Path(sys.prefix)
    if not (prefix / "bin" / "trackmilter").exists():
        pytest.skip(f"{prefix}/bin/trackmilter missing: install trackmilter in this venv")
    install = (REPO / "scripts" / "install").read_text()
    assert 's#/opt/trackmilter/#${PREFIX%/}/#g' in install  # the rewrite imitated here
    out = tmp_path_factory.mktemp("units")
    for unit in UNITS:
        (out / unit.name).write_text(
            unit.read_text().replace("/opt/trackmilter/", f"{prefix}/"))
    return out


def test_units_found() -> None:
    names = {u.name for u in UNITS}
    assert {"trackmilter-milter.service", "trackmilter-purge.timer",
            "trackmilter-networks-refresh.timer"} <= names, names


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_accepts_the_unit(installed_units: Path, unit: Path) -> None:
    done = _run(["systemd-analyze", "verify", "--man=no", str(installed_units / unit.name)],
                cwd=installed_units)
    # An unknown key or a bad value is only a warning (exit 0): none is acceptable.
    assert done.returncode == 0 and (done.stdout + done.stderr).strip() == "", \
        done.stdout + done.stderr


def test_systemd_analyze_verify_would_notice_a_bad_setting(installed_units: Path,
                                                          tmp_path: Path) -> None:
    bad = tmp_path / "trackmilter-purge.timer"
    bad.write_text((installed_units / "trackmilter-purge.timer").read_text()
                   .replace("OnCalendar=daily", "OnCalendar=dailyish"))
    shutil.copy(installed_units / "trackmilter-purge.service", tmp_path)
    done = _run(["systemd-analyze", "verify", "--man=no", str(bad)], cwd=tmp_path)
    assert "Failed to parse calendar specification" in done.stderr


# -- trackmilter.toml -------------------------------------------------------------------

def test_our_loader_reads_the_shipped_toml_and_it_agrees_with_the_other_files() -> None:
    settings = load(CONF / "trackmilter.toml", environ={})
    assert settings.source == str(CONF / "trackmilter.toml")
    # Postfix (Debian's chroot in /var/spool/postfix) names the socket relative to it.
    relative = re.search(r"\{ unix:(\S+),", _snippet_settings()["smtpd_milters"])
    assert relative
    assert settings.milter.socket == f"unix:/var/spool/postfix/{relative.group(1)}"
    milter_unit = (REPO / "systemd" / "trackmilter-milter.service").read_text()
    sock_dir = str(Path(settings.milter.socket.removeprefix("unix:")).parent)
    assert f"ReadWritePaths={sock_dir}\n" in milter_unit
    # nginx's edge reads the same key file and writes the log `trackmilter edge` follows.
    edge = (CONF / "nginx" / "trackmilter-edge.conf").read_text()
    assert f'trackmilter.load("{settings.tracking.secret_file}")' in edge
    assert set(re.findall(r"access_log (\S+) trackmilter_hits", edge)) == {str(settings.edge.log)}
    # nginx in front of `trackmilter web` proxies to [web] listen.
    web = (CONF / "nginx" / "trackmilter-web.conf").read_text()
    assert f"server {settings.web.listen};" in web
    # Under ProtectSystem=strict the daemons write only their StateDirectory.
    state = Path("/var/lib/trackmilter")
    written = [Path(settings.database.url.removeprefix("sqlite:///")), settings.store.spool_dir,
               settings.maillog.state_file, settings.edge.state_file,
               *(s.path for s in settings.networks.sources)]
    assert all(state in p.parents for p in written), written
