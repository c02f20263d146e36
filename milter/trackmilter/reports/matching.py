"""Fast matching of wording: ASCII folding, compiled rules and their literal anchors.

Each reason is one regular expression over lower-cased, whitespace-collapsed text. A
substring test is far cheaper than a regex search, so every rule carries the literal
texts one of which must occur for it to match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """ASCII lower-casing that keeps every index: patterns then need no re.I (far slower).

    On an all-ASCII text (most reports; CPython knows it without a scan) str.lower is the
    same mapping and several times faster than translate's per-character table lookup.
    """
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


_LITERAL = re.compile(r"[a-z0-9 '@_-]+")


def _split_top(pattern: str) -> list[str]:
    """The alternatives of a pattern: `|` outside any group or class."""
    parts, depth, start, escaped, in_class = [], 0, 0, False, False
    for i, ch in enumerate(pattern):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _literal(text: str) -> str:
    """The literal text a pattern fragment must start with (a quantified last char dropped)."""
    m = _LITERAL.match(text)
    if not m:
        return ""
    quantified = text[m.end() : m.end() + 1] in ("?", "*", "{")
    return m.group()[:-1] if quantified else m.group()


def _prefixes(alternative: str) -> list[str] | None:
    """Literal texts one of which must start any match of `alternative`, or None.

    Handles a plain word start and a leading group of plain words ("(?:a|b) c"); anything
    else (a class, an optional group, a nested group) gives None.
    """
    alternative = alternative.removeprefix("\\b")
    if not alternative.startswith("(?:"):
        literal = _literal(alternative)
        return [literal] if len(literal) >= 3 else None
    inner = alternative[3:]
    end = inner.find(")")
    if end < 0 or "(" in inner[:end] or "\\" in inner[:end] or "[" in inner[:end]:
        return None
    if inner[end + 1 : end + 2] in ("?", "*", "{"):
        return None
    literals = [_literal(option) for option in inner[:end].split("|")]
    return literals if all(len(x) >= 2 for x in literals) else None


def anchors(pattern: str) -> tuple[str, ...] | None:
    """Texts at least one of which occurs wherever the pattern matches, or None if unknown.

    A substring test is far cheaper than a regex search, so a rule whose anchors are all
    absent is skipped without running its pattern.
    """
    found: list[str] = []
    for alternative in _split_top(pattern):
        prefixes = _prefixes(alternative)
        if prefixes is None:
            return None
        found.extend(prefixes)
    return tuple(found)


def rx(*alternatives: str) -> re.Pattern[str]:
    """One pattern per reason, matched against lower-cased text (cheaper than re.I).

    Alternatives are joined bare (alternation binds loosest, so no group is needed) and
    mostly start with a word, not with \\b: the engine can then skip ahead on their first
    letters instead of trying every position.
    """
    return re.compile("|".join(alternatives))


Rule = tuple[str, re.Pattern[str], tuple[str, ...] | None]


def prepared(rules: Iterable[tuple[str, re.Pattern[str]]]) -> tuple[Rule, ...]:
    """(name, pattern) pairs with the literal anchors that must appear for a match."""
    return tuple((name, pattern, anchors(pattern.pattern)) for name, pattern in rules)


def first_match(rules: tuple[Rule, ...], text: str) -> str:
    """The name of the first rule that matches `text` (already folded), or "".

    The anchors are cheap substring tests that rule out most patterns before any regex
    runs: most of the decoder's time would otherwise go to patterns that cannot match.
    """
    for name, pattern, needed in rules:
        if needed is not None and not any(map(text.__contains__, needed)):
            continue
        if pattern.search(text):
            return name
    return ""
