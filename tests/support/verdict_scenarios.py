"""The verdict scenario set (tests/data/verdicts/): load it, replay it through the verdict
core as the tracker and the store use it, and score the answers.

- **First answer**: each hit is a real ASGI request to `trackmilter.web.app.TrackerApp`,
  built as `trackmilter.web.server.build` builds it (`judging.request_judge(settings)`, the
  client resolver of `[web] trusted_proxies`, `web.networks.networks_from(settings)`), with
  the hit's headers as its client sent them and X-Forwarded-For from the trusted proxy; the
  verdict is the one the app hands its writer (what `trackmilter_tracker_hits_total` and the
  `hit.click` webhook count). The app's clock is set to the hit's time.
- **Final answer**: all hits of the message, as the app recorded them, judged again by
  `judging.reviser_from(settings)` with the delivery time, as `store.hits.revise` does once
  the hits are stored and `trackmilter maillog` has recorded the remote server's acceptance.

Nothing of the verdict is reimplemented here: when the model changes, the replay follows.
The time the milter signed the message (`signed`, relative to delivery) is carried by the
set and put where a milter that records it would: the first 4 bytes of the tracking id
(`message_id`), which every token carries; a tracker that reads no time from the id is not
affected. The delivery times are the set's: each message is delivered at its own hour from
EPOCH, and `t` is counted from it.

Scores (hits expected `unknown` count in no figure, only in the list of disagreements):
machine precision = machines judged machine / hits judged machine; machine recall =
machines judged machine / machines; people kept = people judged human / people.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

DATA = Path(__file__).resolve().parents[1] / "data" / "verdicts"
BASE_URL = "https://t.example"
VERDICTS = ("human", "machine", "unknown")
Answer = Literal["first", "final"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Every message of the in-process replay is delivered at its own hour of this day onwards.
EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class ScenarioError(ValueError):
    """The scenario set is malformed (the message names the file and scenario)."""


# --- the set --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    id: str
    title: str
    url: str
    what: str


@dataclass(frozen=True)
class Client:
    """A client profile: the headers a real client sends for one kind of request."""

    name: str
    what: str
    basis: str
    sources: tuple[str, ...]
    method: str
    headers: tuple[tuple[str, str], ...]  # lower-case names, in the client's order


@dataclass(frozen=True)
class ScenarioHit:
    t: float  # seconds after the remote server accepted the message
    ip: str
    client: Client
    target: Literal["click", "open"]
    link: int  # document order, 1-based; 0 for the pixel
    expected: str
    actor: str
    conflicting: str = ""  # why `unknown` is the right answer, when it is expected

    @property
    def human(self) -> bool:
        return self.expected == "human"

    @property
    def machine(self) -> bool:
        return self.expected == "machine"


@dataclass(frozen=True)
class Scenario:
    id: str
    family: str
    cls: str
    behaviour: str
    description: str
    sources: tuple[str, ...]
    links: int
    signed: float  # when the milter signed the links, seconds relative to delivery
    hits: tuple[ScenarioHit, ...]
    file: str


@dataclass(frozen=True)
class NetworkList:
    label: str
    stands_for: str
    sources: tuple[str, ...]
    prefixes: tuple[Network, ...]


@dataclass(frozen=True)
class ScenarioSet:
    sources: Mapping[str, Source]
    clients: Mapping[str, Client]
    networks: tuple[NetworkList, ...]
    trusted_proxy: str
    documentation: tuple[Network, ...]
    scenarios: tuple[Scenario, ...]

    def hits(self) -> Iterable[tuple[Scenario, ScenarioHit]]:
        for s in self.scenarios:
            for h in s.hits:
                yield s, h

    def classes(self) -> list[str]:
        return sorted({s.cls for s in self.scenarios}, key=_class_order)


def _class_order(cls: str) -> tuple[int, str]:
    return (0 if cls == "single" else 1, cls)


def _need(table: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = table.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ScenarioError(f"{where}: {key!r} missing or not {kind.__name__}")
    return value


def _number(table: Mapping[str, Any], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: {key!r} missing or not a number")
    return float(value)


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"{where}: {key!r} missing or not a list of strings")
    return tuple(value)


def load(directory: Path = DATA) -> ScenarioSet:
    """The set in `directory`: sources.toml, clients.toml, networks.toml and one file of
    scenarios per family (every other *.toml). Structure is checked here; what the set must
    hold (sources cited, documentation addresses, ...) is the unit tests'."""
    def read(name: str) -> dict[str, Any]:
        with open(directory / name, "rb") as f:
            return tomllib.load(f)

    sources = {
        sid: Source(sid, _need(s, "title", str, f"sources.toml {sid}"),
                    _need(s, "url", str, f"sources.toml {sid}"),
                    _need(s, "what", str, f"sources.toml {sid}"))
        for sid, s in _need(read("sources.toml"), "sources", dict, "sources.toml").items()
    }
    clients: dict[str, Client] = {}
    for name, c in _need(read("clients.toml"), "clients", dict, "clients.toml").items():
        where = f"clients.toml {name}"
        headers = _need(c, "headers", dict, where)
        if not all(isinstance(v, str) for v in headers.values()):
            raise ScenarioError(f"{where}: header values must be strings")
        clients[name] = Client(
            name, _need(c, "what", str, where), _need(c, "basis", str, where),
            _strings(c, "sources", where), str(c.get("method", "GET")).upper(),
            tuple((k.lower(), v) for k, v in headers.items()))
    nets = read("networks.toml")
    networks = tuple(
        NetworkList(_need(n, "label", str, "networks.toml"),
                    _need(n, "stands_for", str, "networks.toml"),
                    _strings(n, "sources", "networks.toml"),
                    tuple(ipaddress.ip_network(p) for p in _strings(n, "prefixes",
                                                                      "networks.toml")))
        for n in _need(nets, "networks", list, "networks.toml"))
    documentation = tuple(ipaddress.ip_network(p)
                          for p in _strings(nets, "documentation", "networks.toml"))
    scenarios: list[Scenario] = []
    for path in sorted(directory.glob("*.toml")):
        if path.name in ("sources.toml", "clients.toml", "networks.toml"):
            continue
        data = read(path.name)
        family = _need(data, "family", str, path.name)
        for s in _need(data, "scenario", list, path.name):
            scenarios.append(_scenario(s, family, path.name, clients))
    ids = [s.id for s in scenarios]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ScenarioError(f"scenario ids used twice: {dupes}")
    return ScenarioSet(sources, clients, networks,
                       _need(nets, "trusted_proxy", str, "networks.toml"), documentation,
                       tuple(scenarios))


def _scenario(s: Mapping[str, Any], family: str, file: str,
              clients: Mapping[str, Client]) -> Scenario:
    sid = _need(s, "id", str, file)
    where = f"{file} {sid}"
    hits = []
    for n, h in enumerate(_need(s, "hits", list, where)):
        hw = f"{where} hit {n}"
        profile = clients.get(_need(h, "client", str, hw))
        if profile is None:
            raise ScenarioError(f"{hw}: unknown client {h['client']!r}")
        target = h.get("target", "click")
        if target not in ("click", "open"):
            raise ScenarioError(f"{hw}: target must be click or open")
        link = int(h.get("link", 0))
        if (target == "click") != (link > 0):
            raise ScenarioError(f"{hw}: a click names its link (1-based), an open none")
        hits.append(ScenarioHit(
            t=_number(h, "t", hw), ip=_need(h, "ip", str, hw), client=profile, target=target,
            link=link, expected=_need(h, "expected", str, hw), actor=_need(h, "actor", str, hw),
            conflicting=str(h.get("conflicting", ""))))
    return Scenario(
        id=sid, family=family, cls=_need(s, "class", str, where),
        behaviour=_need(s, "behaviour", str, where),
        description=_need(s, "description", str, where), sources=_strings(s, "sources", where),
        links=int(_number(s, "links", where)), signed=_number(s, "signed", where),
        hits=tuple(hits), file=file)


# --- configuration: what an administrator would set ---------------------------------------------

def config_sections(data: ScenarioSet, workdir: Path) -> dict[str, dict[str, Any]]:
    """The [web] and [networks] settings of the set (one `cidr` list per label, written
    into `workdir`), for trackmilter_lab.daemon.write_config's `extra`. The verdict
    thresholds stay at their defaults."""
    nets = workdir / "networks"
    nets.mkdir(parents=True, exist_ok=True)
    sources = []
    for n in data.networks:
        path = nets / f"{n.label}.cidr"
        path.write_text(f"# {n.stands_for}\n" + "".join(f"{p}\n" for p in n.prefixes))
        sources.append({"label": n.label, "format": "cidr", "path": str(path)})
    return {
        "web": {"trusted_proxies": [f"{data.trusted_proxy}/32"],
                "forwarded_header": "x-forwarded-for", "name": "replay"},
        "networks": {"sources": sources},
    }


def link_url(scenario: Scenario, link: int) -> str:
    return f"https://shop.example.org/{scenario.id}/{link}"


def request_headers(hit: ScenarioHit, data: ScenarioSet) -> list[tuple[str, str]]:
    """The request as the tracker receives it behind the proxy: the client's headers, then
    the X-Forwarded-For the trusted proxy appends (Host is the transport's)."""
    del data  # the proxy's address is the peer, not a header
    return [*hit.client.headers, ("x-forwarded-for", hit.ip)]


# --- the in-process replay ----------------------------------------------------------------------

@dataclass(frozen=True)
class Judged:
    scenario: Scenario
    hit: ScenarioHit
    first: str
    first_reasons: tuple[str, ...]
    final: str
    final_reasons: tuple[str, ...]

    def verdict(self, answer: Answer) -> str:
        return self.first if answer == "first" else self.final

    def reasons(self, answer: Answer) -> tuple[str, ...]:
        return self.first_reasons if answer == "first" else self.final_reasons


@dataclass
class Score:
    people: int = 0
    machines: int = 0
    unknown_expected: int = 0
    judged_machine: int = 0
    machines_caught: int = 0  # expected machine, judged machine
    people_kept_n: int = 0  # expected human, judged human

    @property
    def hits(self) -> int:
        return self.people + self.machines + self.unknown_expected

    @property
    def precision(self) -> float | None:
        return self.machines_caught / self.judged_machine if self.judged_machine else None

    @property
    def recall(self) -> float | None:
        return self.machines_caught / self.machines if self.machines else None

    @property
    def people_kept(self) -> float | None:
        return self.people_kept_n / self.people if self.people else None

    def add(self, expected: str, verdict: str) -> None:
        if expected == "human":
            self.people += 1
            self.people_kept_n += verdict == "human"
        elif expected == "machine":
            self.machines += 1
            self.machines_caught += verdict == "machine"
        else:
            self.unknown_expected += 1
        self.judged_machine += verdict == "machine"


@dataclass
class Replay:
    judged: list[Judged] = field(default_factory=list)

    def score(self, answer: Answer, cls: str | None = None) -> Score:
        out = Score()
        for j in self.judged:
            if cls is None or j.scenario.cls == cls:
                out.add(j.hit.expected, j.verdict(answer))
        return out

    def classes(self) -> list[str]:
        return sorted({j.scenario.cls for j in self.judged}, key=_class_order)

    def wrong(self, answer: Answer) -> list[Judged]:
        return [j for j in self.judged if j.verdict(answer) != j.hit.expected]


def message_id(scenario: Scenario, signed_at: datetime) -> str:
    """A tracking id of the milter's form (16 base32 characters: 10 bytes), fixed per
    scenario: the second the message was signed (4 bytes, big-endian seconds since 1970, as
    a milter that carries its acceptance time in the id makes them) and 6 bytes of the
    scenario id's hash. A tracker that does not read a time from the id sees 10 arbitrary
    bytes, as before."""
    when = int(signed_at.timestamp()) & 0xFFFFFFFF
    raw = when.to_bytes(4, "big") + hashlib.sha256(scenario.id.encode()).digest()[:6]
    return base64.b32encode(raw).decode("ascii").lower()


def sign_message(signer: Any, tid: str, scenario: Scenario) -> tuple[list[str], str]:
    """The paths of the message's links (document order) and of its pixel, as the milter
    signs them (the signing time travels in `tid`, see message_id)."""
    msg = signer.for_message(tid)
    clicks = [f"/c/{msg.click(i, link_url(scenario, i))}"
              for i in range(1, scenario.links + 1)]
    return clicks, f"/o/{msg.open()}"


class _Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def submit(self, event: Any) -> None:
        self.events.append(event)


def replay(data: ScenarioSet | None = None, workdir: Path | None = None) -> Replay:
    """Judge every hit of the set, first and final answers (see the module's docstring).
    `workdir` holds the configuration written for it (a temporary directory if None)."""
    import tempfile

    data = data if data is not None else load()
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="verdict-replay-") as tmp:
            return _replay(data, Path(tmp))
    return _replay(data, workdir)


def _replay(data: ScenarioSet, workdir: Path) -> Replay:
    from trackmilter import config as cfgmod
    from trackmilter.judging import request_judge, reviser_from
    from trackmilter.metrics import Metrics
    from trackmilter.tokens import Signer
    from trackmilter.web.app import TrackerApp
    from trackmilter.web.forwarded import ClientResolver
    from trackmilter.web.networks import networks_from
    from trackmilter_lab.daemon import write_config

    path = write_config(workdir, workdir / "unused.sock", base_url=BASE_URL,
                        log_level="warning", extra=config_sections(data, workdir))
    settings = cfgmod.load(path)
    signer = Signer.from_file(settings.tracking.secret_file)
    sink = _Sink()
    now = [EPOCH]
    w = settings.web
    # As trackmilter.web.server.build makes it (minus the writer, store, API and rDNS).
    app = TrackerApp(
        base_url=settings.tracking.base_url, signer=signer, sink=sink, metrics=Metrics(),
        judge=request_judge(settings),
        resolver=ClientResolver(w.trusted_proxies, w.forwarded_header),
        networks=networks_from(settings), ipv4_prefix=settings.privacy.ipv4_prefix,
        ipv6_prefix=settings.privacy.ipv6_prefix, name=w.name, clock=lambda: now[0])
    reviser = reviser_from(settings)
    out = Replay()

    async def run() -> None:
        for n, scenario in enumerate(data.scenarios):
            delivered = EPOCH + timedelta(hours=n)
            tid = message_id(scenario, delivered + timedelta(seconds=scenario.signed))
            clicks, pixel = sign_message(signer, tid, scenario)
            order = sorted(range(len(scenario.hits)), key=lambda i: scenario.hits[i].t)
            recorded: dict[int, Any] = {}
            for i in order:
                hit = scenario.hits[i]
                now[0] = delivered + timedelta(seconds=hit.t)
                path = clicks[hit.link - 1] if hit.target == "click" else pixel
                before = len(sink.events)
                status = await _request(app, path, hit.client.method,
                                        [("host", "t.example"), *request_headers(hit, data)],
                                        data.trusted_proxy)
                if status not in (200, 302) or len(sink.events) != before + 1:
                    raise RuntimeError(f"{scenario.id} hit {i}: answered {status}, "
                                       f"{len(sink.events) - before} hits recorded")
                recorded[i] = sink.events[-1]
            stored = [recorded[i] for i in order]  # as the store reads them: by time
            # As the store revises: with the delivery time and the message's link count.
            revised = reviser(stored, delivered, scenario.links)
            final = dict(zip(order, revised, strict=True))
            for i, hit in enumerate(scenario.hits):
                first = recorded[i]
                verdict, reasons = final[i]
                out.judged.append(Judged(
                    scenario, hit, first.verdict, tuple(r.code for r in first.reasons),
                    verdict, tuple(r.code for r in reasons)))

    asyncio.run(run())
    return out


async def _request(app: Any, path: str, method: str, headers: Sequence[tuple[str, str]],
                   peer: str) -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": (peer, 50000), "server": ("127.0.0.1", 8081),
    }
    sent: list[Mapping[str, Any]] = []

    async def receive() -> Mapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Mapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


# --- reporting ------------------------------------------------------------------------------------

TARGETS = {"precision": 0.95, "recall": 0.90, "people_kept": 0.95}


def _f(x: float | None) -> str:
    return "   –" if x is None else f"{x:.2f}"


def score_line(s: Score) -> str:
    return f"P {_f(s.precision)}  R {_f(s.recall)}  K {_f(s.people_kept)}"


def format_report(result: Replay, title: str = "in-process replay",
                  others: Mapping[str, Replay] | None = None, wrong: bool = True) -> str:
    """A table: per class, machine precision (P), machine recall (R) and people kept (K),
    first and final answers; `others` adds columns of other replays (the end-to-end one)."""
    runs = {title: result, **(others or {})}
    head = f"{'class':<24} {'hits':>4} {'ppl':>4} {'mach':>4}"
    for name in runs:
        head += f" | {name + ' first':<28} | {name + ' final':<28}"
    lines = [head, "-" * len(head)]
    for cls in [*result.classes(), None]:
        base = result.score("first", cls)
        row = f"{cls or 'ALL':<24} {base.hits:>4} {base.people:>4} {base.machines:>4}"
        for r in runs.values():
            row += f" | {score_line(r.score('first', cls)):<28}"
            row += f" | {score_line(r.score('final', cls)):<28}"
        lines.append(row)
    lines.append(f"targets: P >= {TARGETS['precision']}, R >= {TARGETS['recall']}, "
                 f"K >= {TARGETS['people_kept']}, first and final")
    for name, r in runs.items():
        changed = [j for j in r.judged if j.first != j.final]
        lines.append(f"{name}: {len(changed)} of {len(r.judged)} hits revised to another "
                     f"verdict ({sum(j.final == j.hit.expected for j in changed)} of them "
                     "to the expected one)")
    for name, r in runs.items():
        lines.append("")
        lines.append(f"{name}: why hits were misjudged (class, answer, expected -> judged "
                     "[reasons recorded]: hits)")
        lines.extend(f"  {line}" for line in why(r))
    if wrong:
        for name, r in runs.items():
            lines.append("")
            lines.append(f"{name}: hits judged other than expected "
                         "(first -> final, with the reasons recorded)")
            for j in r.judged:
                if j.first == j.hit.expected and j.final == j.hit.expected:
                    continue
                lines.append(
                    f"  {j.scenario.cls:<22} {j.scenario.id:<36} t={j.hit.t:>8.1f} "
                    f"{j.hit.target:<5} {j.hit.actor[:28]:<28} expected {j.hit.expected:<7} "
                    f"first {j.first} [{','.join(j.first_reasons)}] "
                    f"final {j.final} [{','.join(j.final_reasons)}]")
    return "\n".join(lines)


def why(result: Replay) -> list[str]:
    """The misjudged hits grouped by class, answer, expected and judged verdict and the
    reason codes recorded, most frequent first."""
    groups: Counter[tuple[str, str, str, str, tuple[str, ...]]] = Counter()
    for j in result.judged:
        for answer in ("first", "final"):
            a: Answer = "first" if answer == "first" else "final"
            if j.verdict(a) != j.hit.expected:
                groups[(j.scenario.cls, answer, j.hit.expected, j.verdict(a),
                        tuple(sorted(j.reasons(a))))] += 1
    order = {c: n for n, c in enumerate(result.classes())}
    return [f"{cls:<22} {answer:<5} {exp} -> {got} [{','.join(codes)}]: {n}"
            for (cls, answer, exp, got, codes), n in sorted(
                groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] != "first",
                                                -kv[1]))]


def meets_targets(s: Score) -> bool:
    p, r, k = s.precision, s.recall, s.people_kept
    return (p is not None and p >= TARGETS["precision"] and r is not None
            and r >= TARGETS["recall"] and k is not None and k >= TARGETS["people_kept"])


if __name__ == "__main__":
    from trackmilter import logging as tmlog

    tmlog.configure("json", "warning")
    print(format_report(replay()))
