"""The `trackmilter` command: one subcommand per daemon, plus status, report and decode.

Each command imports what it runs inside its own function, not at the top of this module:
`trackmilter decode` and `trackmilter status` must start fast (the store, the milter
library, the web server and the log setup take 20 to 100 ms each to import), and the
tracker must choose prometheus-client's multiprocess mode before that library is imported.
This is the one module where imports inside functions are the rule, for start-up time.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from trackmilter import __version__

if TYPE_CHECKING:
    from trackmilter.config import Settings

EX_CONFIG = 78  # sysexits.h: configuration error


def _settings(ctx: click.Context, *, logs: bool = True) -> Settings:
    """[config] once per invocation; `logs`: set up the daemons' structured logging (the
    read-only commands write nothing but their output and need none of it)."""
    from trackmilter import config as cfgmod  # start-up time (module docstring)

    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "settings" not in obj:
        path: Path | None = obj.get("config_path")
        if path is None and cfgmod.DEFAULT_CONFIG.exists():
            path = cfgmod.DEFAULT_CONFIG
        try:
            obj["settings"] = cfgmod.load(path)
        except cfgmod.ConfigError as exc:
            click.echo(f"trackmilter: configuration error: {exc}", err=True)
            ctx.exit(EX_CONFIG)
        if logs:
            from trackmilter import logging as tmlog  # start-up time (module docstring)

            s = obj["settings"]
            tmlog.configure(s.log.format, s.log.level,
                            stream=sys.stderr if obj.get("cli") else None,
                            hash_addresses=s.log.hash_addresses)
    settings: Settings = obj["settings"]
    return settings


def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["config_path"] = value


def _config_here(f: Any) -> Any:
    """`--config` accepted after the command too (`trackmilter status --config X ID`)."""
    return click.option("--config", type=click.Path(path_type=Path), expose_value=False,
                        callback=_remember_config, is_eager=True,
                        help="TOML configuration file (as before the command).")(f)


@click.group()
@click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="TRACKMILTER_CONFIG",
              help="TOML configuration file (default /etc/trackmilter/trackmilter.toml if present).")
@click.version_option(__version__, prog_name="trackmilter")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """trackmilter: what happened to an email, and how sure we can be."""
    ctx.ensure_object(dict)["config_path"] = config_path


@main.command()
@_config_here
@click.pass_context
def milter(ctx: click.Context) -> None:
    """Run the milter daemon (Postfix smtpd_milters / Sendmail INPUT_MAIL_FILTER)."""
    from trackmilter.daemon import StartupError
    from trackmilter.mta.runner import run
    from trackmilter.store import StoreError
    from trackmilter.tokens import KeyFileError
    from trackmilter.wiring import milter_hooks

    settings = _settings(ctx)
    try:
        ctx.exit(run(settings, hooks=milter_hooks(settings)))
    except (StartupError, KeyFileError, StoreError) as exc:
        click.echo(f"trackmilter milter: {exc}", err=True)
        ctx.exit(EX_CONFIG if not isinstance(exc, StoreError) else 1)


@main.command()
@click.argument("path", required=False)
@_config_here
@click.pass_context
def maillog(ctx: click.Context, path: str | None) -> None:
    """Follow the MTA's delivery log and record, per recipient, what the next server said.

    PATH overrides [maillog] path; "-" reads standard input: syslog lines, or the
    systemd journal as `journalctl -o json` (or -o short-iso) writes it. Debian 12
    runs Postfix as postfix@-.service, so select it with -u 'postfix@*':
    `journalctl -f -a -n all -o json -u 'postfix@*' | trackmilter maillog -`
    (not -o cat: it drops the time, host and program). Reading JSON, the last entry's
    cursor is saved in [maillog] state_file once stored; restart journalctl with
    --after-cursor=CURSOR (the README's "The delivery log" has the script).
    """
    import dataclasses

    from trackmilter.daemon import StartupError
    from trackmilter.maillog.daemon import run
    from trackmilter.store import StoreError
    from trackmilter.wiring import store_hooks

    settings = _settings(ctx)
    if path is not None:
        settings = dataclasses.replace(
            settings, maillog=dataclasses.replace(settings.maillog, path=path))
    try:
        ctx.exit(run(settings, hooks=store_hooks(settings)))
    except (StartupError, StoreError, OSError) as exc:
        click.echo(f"trackmilter maillog: {exc}", err=True)
        ctx.exit(EX_CONFIG if isinstance(exc, StartupError) else 1)


@main.command()
@_config_here
@click.pass_context
def web(ctx: click.Context) -> None:
    """Run the tracker: the click and pixel URLs under [tracking] base_url, /healthz,
    /readyz and /metrics, on [web] listen (put it behind a reverse proxy)."""
    settings = _settings(ctx)
    if settings.web.workers > 1:
        # Several processes, one /metrics: prometheus-client's multiprocess mode, chosen
        # before the library is first imported (the workers are forked from here).
        _multiprocess_metrics(settings.store.spool_dir / "prometheus")

    from trackmilter.daemon import StartupError
    from trackmilter.store import StoreError
    from trackmilter.tokens import KeyFileError
    from trackmilter.web.networks import NetworkFileError
    from trackmilter.web.server import run
    from trackmilter.wiring import WEB_WORKER

    try:
        ctx.exit(run(settings, worker=WEB_WORKER))
    except (StartupError, KeyFileError, NetworkFileError, StoreError, OSError) as exc:
        click.echo(f"trackmilter web: {exc}", err=True)
        ctx.exit(1 if isinstance(exc, (StoreError, OSError)) else EX_CONFIG)


@main.command()
@_config_here
@click.pass_context
def edge(ctx: click.Context) -> None:
    """Store the hits nginx answered itself (conf/nginx/trackmilter-edge.conf): follow its
    trackmilter_hits log ([edge] log), verify, judge and store every hit."""
    settings = _settings(ctx)
    from trackmilter.daemon import StartupError
    from trackmilter.store import StoreError
    from trackmilter.tokens import KeyFileError
    from trackmilter.web.edge import run
    from trackmilter.web.networks import NetworkFileError
    from trackmilter.web.server import build_check
    from trackmilter.wiring import store_hooks

    try:
        build_check(settings)
        ctx.exit(run(settings, hooks=store_hooks(settings)))
    except (StartupError, KeyFileError, NetworkFileError, StoreError, OSError) as exc:
        click.echo(f"trackmilter edge: {exc}", err=True)
        ctx.exit(1 if isinstance(exc, (StoreError, OSError)) else EX_CONFIG)


def _multiprocess_metrics(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # counters of processes of an earlier run
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


@main.command()
@click.option("--older-than", "days", type=click.IntRange(min=1),
              help="Days to keep (default: [privacy] retention_days).")
@_config_here
@click.pass_context
def purge(ctx: click.Context, days: int | None) -> None:
    """Delete messages, their timelines and tracker hits older than the retention period."""
    from datetime import timedelta

    from trackmilter.daemon import store_from
    from trackmilter.model import utcnow
    from trackmilter.store import StoreError

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx, logs=False)
    keep = days if days is not None else settings.privacy.retention_days
    if keep <= 0:
        click.echo("trackmilter purge: [privacy] retention_days is 0 (keep everything); "
                   "give --older-than DAYS to purge anyway", err=True)
        ctx.exit(2)
    before = utcnow() - timedelta(days=keep)
    try:
        # No statement bound: deleting months of a large store may take longer than one
        # of the daemons' statements may; it runs by hand or from a timer.
        store = store_from(settings, statement_timeout=0, existing=True)
        try:
            counts = store.purge(before)
        finally:
            store.close()
    except StoreError as exc:
        click.echo(f"trackmilter purge: {exc}", err=True)
        ctx.exit(1)
    click.echo(f"deleted what is older than {before.isoformat(timespec='seconds')}: "
               + ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in counts.items()))


@main.command()
@_config_here
@click.pass_context
def webhooks(ctx: click.Context) -> None:
    """Deliver stored events to the [webhooks] endpoints: signed POSTs from a durable outbox,
    retried with backoff."""
    from trackmilter.daemon import StartupError
    from trackmilter.store import StoreError
    from trackmilter.webhooks.deliver import WebhookConfigError, run

    settings = _settings(ctx)
    try:
        ctx.exit(run(settings))
    except (WebhookConfigError, StartupError, StoreError) as exc:
        click.echo(f"trackmilter webhooks: {exc}", err=True)
        ctx.exit(1 if isinstance(exc, StoreError) else EX_CONFIG)


@main.command()
@_config_here
@click.pass_context
def check(ctx: click.Context) -> None:
    """Read the configuration, the key file and the network lists as the daemons would, and
    say what is wrong (exit 78) or that all read. The units run it before a reload: a
    tracker reloaded with a key file that does not read would lose its workers."""
    from trackmilter.daemon import StartupError, load_signer
    from trackmilter.tokens import KeyFileError
    from trackmilter.web.networks import NetworkFileError, networks_from

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx, logs=False)
    try:
        signer = load_signer(settings)
        networks_from(settings)
    except (StartupError, KeyFileError, NetworkFileError, OSError) as exc:
        click.echo(f"trackmilter check: {exc}", err=True)
        ctx.exit(EX_CONFIG)
    keys = f"{len(signer.key_ids)} key(s)" if signer else "tracking off (no base_url)"
    click.echo(f"configuration {settings.source}: reads; {keys}; network lists read")


@main.group()
def networks() -> None:
    """The IP range lists the verdict uses ([networks] sources)."""


@networks.command("refresh")
@_config_here
@click.pass_context
def networks_refresh(ctx: click.Context) -> None:
    """Download every source that has a url (needs internet; run it daily from a timer).
    A file is replaced only by a download that parses; the tracker reads the new lists
    when it restarts."""
    from trackmilter.web.networks import refresh, sources_from

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx)
    failed = False
    for r in refresh(sources_from(settings), timeout=settings.networks.refresh_timeout):
        detail = f"{r.prefixes} prefixes" if r.status in ("updated", "unchanged") else r.error
        click.echo(f"{r.label}\t{r.status}\t{r.path}\t{detail or 'no url: kept by hand'}")
        failed = failed or r.status == "failed"
    ctx.exit(1 if failed else 0)


@networks.command("check")
@_config_here
@click.pass_context
def networks_check(ctx: click.Context) -> None:
    """Parse every configured list and say how many ranges each holds."""
    from trackmilter.web.networks import NetworkFileError, NetworkSet, sources_from

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx)
    failed = False
    for src in sources_from(settings):
        try:
            n = len(NetworkSet.load([src]))
        except NetworkFileError as exc:
            click.echo(f"{src.label}\tfailed\t{exc}")
            failed = True
            continue
        click.echo(f"{src.label}\tok\t{src.path}\t{n} ranges")
    ctx.exit(1 if failed else 0)


@main.group()
def db() -> None:
    """Database schema management."""


@db.command("upgrade")
@_config_here
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or migrate the schema of [database] url to the current version."""
    from trackmilter.store import StoreError, current_revision, head_revision, upgrade

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx)
    url = settings.database.url
    try:
        before = current_revision(url)
        upgrade(url)
        after = current_revision(url)
    except StoreError as exc:
        click.echo(f"trackmilter db upgrade: {exc}", err=True)
        ctx.exit(1)
    if before is None:
        click.echo(f"created the database schema (revision {after})")
    elif before != after:
        click.echo(f"upgraded the database schema from revision {before} to {after}")
    else:
        click.echo(f"the database schema is up to date (revision {head_revision()})")


@db.command("copy")
@click.argument("destination")
@_config_here
@click.pass_context
def db_copy(ctx: click.Context, destination: str) -> None:
    """Copy every row of [database] url into DESTINATION, an empty database (e.g. the
    PostgreSQL several servers will share: postgresql+psycopg://USER@HOST/DB). Stop the
    daemons writing to the source first; then point [database] url at DESTINATION."""
    from trackmilter.store import StoreError
    from trackmilter.store.copy import copy_store

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx, logs=False)
    try:
        counts = copy_store(settings.database.url, destination)
    except StoreError as exc:
        click.echo(f"trackmilter db copy: {exc}", err=True)
        ctx.exit(1)
    click.echo("copied " + ", ".join(f"{n} {table}" for table, n in counts.items())
               + "; every table counted on both sides")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--explain", is_flag=True,
              help="Every piece of evidence as a sentence saying what it proves.")
@click.argument("ident")
@_config_here
@click.pass_context
def status(ctx: click.Context, as_json: bool, explain: bool, ident: str) -> None:
    """Show what is known about a message: IDENT is a tracking id, Message-ID, queue id or
    recipient address (then only that recipient is shown). One line per piece of evidence,
    within 100 columns; --explain says in words what each proves."""
    from trackmilter.daemon import store_from
    from trackmilter.status import annotate, render, render_short
    from trackmilter.store import StoreError

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx, logs=False)
    try:
        store = store_from(settings, existing=True)
        try:
            views = store.lookup(ident)
            seen = store.log_progress([v.mta for v in views if v.mta]) if views else {}
        finally:
            store.close()
    except StoreError as exc:
        click.echo(f"trackmilter status: {exc}", err=True)
        ctx.exit(1)
    if as_json:
        click.echo(json.dumps(annotate(views), indent=2, sort_keys=True))
    elif views:
        click.echo(render(views) if explain else render_short(views, ident, seen))
    else:
        click.echo(f"nothing recorded for {ident!r}")
    if not views:
        ctx.exit(3)


@main.command()
@click.option("--since", default="7d", show_default=True, help="How far back: 7d, 12h, 30m.")
@click.option("--sender", default="", help="Only messages from this envelope sender.")
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE",
              help="Only messages with this header (one of [milter] record_headers).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "everything", is_flag=True,
              help="Count inbound mail and bounce notices (null sender) too.")
@_config_here
@click.pass_context
def report(ctx: click.Context, since: str, sender: str, headers: tuple[str, ...],
           as_json: bool, everything: bool) -> None:
    """Counts and rates over the outgoing messages of a period, each with its denominator."""
    from trackmilter.daemon import store_from
    from trackmilter.model import utcnow
    from trackmilter.store import StoreError
    from trackmilter.tally import as_dict, header_filter, parse_since, render, tally

    ctx.ensure_object(dict)["cli"] = True
    settings = _settings(ctx, logs=False)
    try:
        start = utcnow() - parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    try:
        wanted = header_filter(headers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--header") from None
    unknown = set(wanted) - set(settings.milter.record_headers)
    if unknown:
        click.echo(f"trackmilter report: warning: {', '.join(sorted(unknown))} not in "
                   "[milter] record_headers: no message will match", err=True)
    try:
        # No statement bound: a report scans the whole period, however long that takes.
        store = store_from(settings, statement_timeout=0, existing=True)
        try:
            total = store.count_messages(start, sender)
            with click.progressbar(length=total, label="scanning", file=sys.stderr,
                                   show_pos=True) as bar:
                counted = tally(store, start, sender, wanted, progress=bar.update,
                                everything=everything)
        finally:
            store.close()
    except StoreError as exc:
        click.echo(f"trackmilter report: {exc}", err=True)
        ctx.exit(1)
    if as_json:
        click.echo(json.dumps({"since": start.isoformat(), "sender": sender or None,
                               "headers": wanted, **as_dict(counted)}, indent=2,
                              sort_keys=True))
    else:
        who = f" from <{sender}>" if sender else ""
        who += "".join(f" with {k}: {v}" for k, v in wanted.items())
        click.echo(render(counted, f"messages{who} since {start.isoformat(timespec='seconds')}"))


DECODE_FIELDS = ("file", "kind", "recipient", "action", "status", "replycode", "reason",
                 "hardbounce", "feedback_type")


def _decode_cell(row: dict[str, Any], key: str) -> str:
    if key == "hardbounce":  # hard or soft only means something for a failure
        return ("hard" if row[key] else "soft") if row["kind"] == "dsn" else "-"
    return str(row[key] or "-")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON array instead of lines.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def decode(as_json: bool, files: tuple[Path, ...]) -> None:
    """Decode bounces (DSN and common non-standard formats), read receipts (MDN) and
    complaints (ARF): one entry per recipient found. Needs no configuration."""
    from trackmilter.reports import decode as decode_report

    rows: list[dict[str, Any]] = []
    failed = False
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            click.echo(f"trackmilter decode: {path}: {exc.strerror}", err=True)
            failed = True
            continue
        report = decode_report(raw)
        for r in report.recipients if report is not None else ():
            rows.append({
                "file": str(path), "kind": report.kind if report else "",
                "recipient": r.recipient or r.original_recipient, "action": r.action,
                "status": r.status, "replycode": r.replycode, "reason": r.reason,
                "hardbounce": r.hardbounce, "feedback_type": r.feedback_type,
            })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            click.echo("\t".join(_decode_cell(row, k) for k in DECODE_FIELDS))
    if failed:
        sys.exit(1)


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("/var/tmp/trackmilter-demo"),
              show_default=True, help="Where the private Postfix instance and database live.")
def demo(workdir: Path) -> None:
    """Start a private Postfix instance with trackmilter attached, send samples, show status.

    The demo is test equipment (the lab: lab/trackmilter_lab in the source tree), not part
    of the installed package: scripts/setup installs it beside trackmilter."""
    try:
        from trackmilter_lab.demo import run_demo
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "trackmilter_lab":
            raise
        raise click.ClickException(
            "the demo needs the test lab (trackmilter_lab), which is not part of the "
            "trackmilter package: from a source checkout run scripts/quickstart, or "
            "`pip install -e lab` into this environment") from None

    sys.exit(run_demo(workdir, sys.executable, sys.stdout))
