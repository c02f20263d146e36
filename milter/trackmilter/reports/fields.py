"""RFC 3464 / 8098 / 5965 field blocks: `Name: value` lines in blank-line-separated groups."""

from __future__ import annotations

import re

Fields = dict[str, str]

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")


def split_groups(text: str) -> list[list[str]]:
    """Split a report body into groups of unfolded lines.

    RFC 3464 separates the per-message group from each per-recipient group with a blank
    line; continuation lines (leading white space) belong to the field above (RFC 5322
    folding), which real MTAs use for long Diagnostic-Code values.
    """
    groups: list[list[str]] = []
    current: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current:
                groups.append(current)
                current = []
        elif line[0] in " \t" and current:
            current[-1] = current[-1] + " " + line.strip()
        else:
            current.append(line.rstrip())
    if current:
        groups.append(current)
    return groups


def parse_group(lines: list[str]) -> Fields:
    """Map lower-cased field names to values; the first occurrence wins, junk is skipped."""
    fields: Fields = {}
    for line in lines:
        m = _FIELD.match(line)
        if m:
            fields.setdefault(m.group(1).lower(), m.group(2).strip())
    return fields


def all_values(text: str, name: str) -> list[str]:
    """Every value of a field that may repeat (RFC 5965 allows many Original-Rcpt-To)."""
    values = []
    for group in split_groups(text):
        for line in group:
            m = _FIELD.match(line)
            if m and m.group(1).lower() == name:
                values.append(m.group(2).strip())
    return values


def parse_blocks(text: str) -> list[Fields]:
    """All field groups of a report body that hold at least one field."""
    return [f for f in (parse_group(g) for g in split_groups(text)) if f]


def typed_value(value: str) -> str:
    """Strip an RFC 3464 type prefix (`rfc822; a@b`, `dns; mx.example`, `smtp; 550 ...`).

    Only a short token before the first `;` counts as a type, so a diagnostic that happens
    to contain a semicolon later is kept whole.
    """
    m = re.match(r"^\s*([A-Za-z0-9-]{1,20})\s*;\s*(.*)$", value, re.S)
    return (m.group(2) if m else value).strip()


def bare_address(value: str) -> str:
    """The address inside `rfc822; <a@b>` or `"Name" <a@b>`, without brackets or quotes."""
    value = typed_value(value)
    m = re.search(r"<([^<>\s]+@[^<>\s]+)>", value)
    if m:
        return m.group(1)
    m = re.search(r"[^\s<>\"'();,:]+@[^\s<>\"'();,:]+", value)
    return m.group(0).rstrip(".") if m else value.strip("<> ")
