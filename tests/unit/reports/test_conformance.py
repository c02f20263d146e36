"""Conformance over real bounce corpora: per expected recipient, do we decode what it says?

Four corpora, scored separately. `bounces/` (sisimai's set-of-emails, expected answers from
sisimai's own test suite) is the one the decoder's rules were first written against; the
others (`flufl-bounce/`, `bounce-email/`, `flanker/`: other projects' test messages, with
expected answers written for trackmilter by reading each message) are the check that the
rules hold on mail they were not written for. Every corpus must meet the decoder's targets
on its own, and its ordinary messages (`not-bounces/` or `non-bounces/`) must decode to no
failed recipient. tests/benchmarks/bench_decode.py prints the same figures beside sisimai's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support import BOUNCE_CORPUS, UNSEEN_BOUNCE_CORPORA

from trackmilter.reports import decode

# The decoder's targets, per corpus; the floors below them catch a regression with margin.
TARGETS = {"found": 0.97, "status": 0.95, "reason": 0.90}
FLOORS = {"found": 0.97, "status": 0.95, "replycode": 0.95, "reason": 0.90}
HARDBOUNCE_FLOOR = 0.94  # only bounces/ states hard/soft (sisimai's own answers)
PSEUDO_STATUS = re.compile(r"^(\d)\.0\.9\d\d$")
# sisimai says "undefined" where nothing was decided and "onhold" where it could not
# tell; for a recipient that failed without a stated cause both mean "no cause known".
NO_CAUSE = frozenset({"onhold", "undefined"})
KEYS = ("found", "status", "replycode", "reason")


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded recipient, from our decoder or from sisimai, as the scorer compares it."""

    recipient: str
    status: str
    replycode: str
    reason: str
    action: str = ""
    original_recipient: str = ""
    hardbounce: bool | None = None


Decoder = Callable[[Path], Sequence[Decoded]]


@dataclass(frozen=True)
class Figures:
    """Agreement counts over all expected recipients of one corpus."""

    name: str
    expected: int
    counts: dict[str, int]
    not_bounces: dict[str, int]

    def ratio(self, key: str) -> float:
        return self.counts[key] / self.expected if self.expected else 0.0

    @property
    def false_positives(self) -> int:
        """Ordinary messages that decoded to at least one failed recipient."""
        return sum(1 for n in self.not_bounces.values() if n)

    def summary(self) -> str:
        parts = [f"{k}={self.ratio(k):.3f} ({self.counts[k]}/{self.expected})" for k in self.counts]
        return (
            f"{self.name}: " + "; ".join(parts)
            + f"; false positives {self.false_positives}/{len(self.not_bounces)} not-bounces"
        )


def status_agrees(expected: str, got: str) -> bool:
    """sisimai's X.0.9NN codes are its own inventions: only their class is evidence."""
    m = PSEUDO_STATUS.match(expected)
    if m:
        return got[:1] == m.group(1)
    m = PSEUDO_STATUS.match(got)
    if m:
        got = f"{m.group(1)}.0.0"
    return expected == got


def reason_agrees(expected: str, got: str) -> bool:
    return expected == got or (expected in NO_CAUSE and got in NO_CAUSE)


def match(expected: dict[str, object], index: int, got: Sequence[Decoded]) -> Decoded | None:
    """The decoded recipient for an expected one: by address (the final recipient or, when
    the report gives it, the address as the sender wrote it), else by order."""
    address = str(expected.get("recipient", "")).lower()
    if address:
        return next(
            (r for r in got if address in (r.recipient.lower(), r.original_recipient.lower())),
            None,
        )
    return got[index] if index < len(got) else None


def agreements(expected: dict[str, object], got: Decoded) -> dict[str, bool]:
    result = {
        "status": status_agrees(str(expected["status"]), got.status),
        "replycode": expected["replycode"] == got.replycode,
        "reason": reason_agrees(str(expected["reason"]), got.reason),
    }
    if "hardbounce" in expected and got.hardbounce is not None:
        result["hardbounce"] = expected["hardbounce"] == got.hardbounce
    return result


def ours(path: Path) -> Sequence[Decoded]:
    """Our decoder's answer for one file."""
    report = decode(path.read_bytes())
    if report is None:
        return ()
    return tuple(
        Decoded(
            r.recipient, r.status, r.replycode, r.reason, r.action, r.original_recipient,
            r.hardbounce,
        )
        for r in report.recipients
    )


def is_failure(entry: Decoded) -> bool:
    return entry.action in ("failed", "delayed", "")


def not_bounce_files(corpus: Path) -> list[Path]:
    return sorted(
        p for folder in ("not-bounces", "non-bounces") for p in (corpus / folder).glob("*")
        if p.suffix in (".eml", ".txt")
    )


def measure(corpus: Path = BOUNCE_CORPUS, decoder: Decoder = ours) -> Figures:
    """Decode every corpus file once and count agreements per expected recipient."""
    expected_all = json.loads((corpus / "expected.json").read_text("utf-8"))
    counts = dict.fromkeys(KEYS, 0)
    if any("hardbounce" in e for entries in expected_all.values() for e in entries):
        counts["hardbounce"] = 0
    total = 0
    for name, expected in sorted(expected_all.items()):
        got = decoder(corpus / name)
        for index, entry in enumerate(expected):
            total += 1
            decoded = match(entry, index, got)
            if decoded is None:
                continue
            counts["found"] += 1
            for key, ok in agreements(entry, decoded).items():
                counts[key] += ok
    not_bounces = {
        p.name: sum(1 for r in decoder(p) if is_failure(r)) for p in not_bounce_files(corpus)
    }
    return Figures(corpus.name, total, counts, not_bounces)


# sisimai (Debian's libsisimai-perl), run once over the files; its answers in our shape.
SISIMAI_SCRIPT = r"""
use strict; use warnings; use Sisimai; use JSON::PP;
my $json = JSON::PP->new->ascii->canonical;
for my $f (@ARGV) {
    my @r;
    for my $e (@{ Sisimai->make($f) || [] }) {
        push @r, [lc($e->recipient->address), $e->deliverystatus // '', $e->replycode // '',
                  $e->reason // '', $e->action // ''];
    }
    print $json->encode([$f, \@r]), "\n";
}
"""


def sisimai_available() -> bool:
    """Is perl there, with the Sisimai module loadable?"""
    if shutil.which("perl") is None:
        return False
    probe = subprocess.run(["perl", "-MSisimai", "-e", "1"], capture_output=True, check=False)
    return probe.returncode == 0


def corpus_files(corpus: Path) -> list[Path]:
    """Every file a corpus scores: those with expected answers, then the not-bounces."""
    names = json.loads((corpus / "expected.json").read_text("utf-8"))
    return [corpus / n for n in sorted(names)] + not_bounce_files(corpus)


def sisimai_decoder(corpora: Sequence[Path]) -> Decoder:
    """sisimai's answers for every file of the corpora (one perl run), as a Decoder."""
    files = [str(f) for c in corpora for f in corpus_files(c)]
    out = subprocess.run(
        ["perl", "-e", SISIMAI_SCRIPT, *files], capture_output=True, check=True, text=True
    ).stdout
    answers: dict[str, tuple[Decoded, ...]] = {}
    for line in out.splitlines():
        name, rows = json.loads(line)
        answers[name] = tuple(Decoded(*row) for row in rows)
    return lambda path: answers.get(str(path), ())


def measure_all(decoder: Decoder = ours) -> list[Figures]:
    """Figures for every corpus: the one the rules were written against first."""
    return [measure(c, decoder) for c in (BOUNCE_CORPUS, *UNSEEN_BOUNCE_CORPORA)]


def pooled(figures: Iterable[Figures], name: str) -> Figures:
    """Several corpora's figures added up, as one (the leave-one-corpus-out view)."""
    items = list(figures)
    counts = dict.fromkeys(KEYS, 0)
    not_bounces: dict[str, int] = {}
    for f in items:
        for key in KEYS:
            counts[key] += f.counts[key]
        not_bounces.update({f"{f.name}/{k}": v for k, v in f.not_bounces.items()})
    return Figures(name, sum(f.expected for f in items), counts, not_bounces)


@pytest.fixture(scope="module")
def all_figures() -> dict[str, Figures]:
    for corpus in (BOUNCE_CORPUS, *UNSEEN_BOUNCE_CORPORA):
        assert (corpus / "expected.json").is_file(), f"bounce corpus not found at {corpus}"
    result = {f.name: f for f in measure_all()}
    print()
    for f in result.values():
        print(f"bounce corpus conformance, {f.summary()}")
    return result


CORPORA = [c.name for c in (BOUNCE_CORPUS, *UNSEEN_BOUNCE_CORPORA)]


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("key", sorted(FLOORS))
def test_agreement_floor(all_figures: dict[str, Figures], corpus: str, key: str) -> None:
    figures = all_figures[corpus]
    assert figures.ratio(key) >= FLOORS[key], f"{key} fell below {FLOORS[key]}: {figures.summary()}"


def test_hard_or_soft_agrees_with_sisimai(all_figures: dict[str, Figures]) -> None:
    figures = all_figures[BOUNCE_CORPUS.name]
    assert figures.ratio("hardbounce") >= HARDBOUNCE_FLOOR, figures.summary()


@pytest.fixture(scope="module")
def sisimai_figures() -> dict[str, Figures]:
    if not sisimai_available():
        pytest.skip("sisimai not installed: apt-get install -y libsisimai-perl")
    corpora = (BOUNCE_CORPUS, *UNSEEN_BOUNCE_CORPORA)
    return {f.name: f for f in measure_all(sisimai_decoder(corpora))}


@pytest.mark.parametrize("corpus", [c.name for c in UNSEEN_BOUNCE_CORPORA])
def test_not_below_sisimai(
    all_figures: dict[str, Figures], sisimai_figures: dict[str, Figures], corpus: str
) -> None:
    """On the corpora whose answers were written by reading the messages (not sisimai's
    own), no column below sisimai's on the same files, and no more false positives."""
    ours_, theirs = all_figures[corpus], sisimai_figures[corpus]
    for key in KEYS:
        assert ours_.ratio(key) >= theirs.ratio(key), f"{key}: {ours_.summary()} / {theirs.summary()}"
    assert ours_.false_positives <= theirs.false_positives


@pytest.mark.parametrize("corpus", CORPORA)
def test_not_bounces_have_no_failed_recipients(
    all_figures: dict[str, Figures], corpus: str
) -> None:
    figures = all_figures[corpus]
    assert not any(figures.not_bounces.values()), figures.not_bounces
