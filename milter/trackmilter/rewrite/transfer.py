"""Content-Transfer-Encoding decode/encode (RFC 2045 §6) with the message's line ending."""

from __future__ import annotations

import binascii

__all__ = [
    "IDENTITY",
    "KNOWN",
    "decode",
    "encode",
    "qp_encode",
    "qp_splice",
    "split_trailing_breaks",
]

IDENTITY = frozenset({"7bit", "8bit", "binary"})
KNOWN = IDENTITY | {"quoted-printable", "base64"}

Edit = tuple[int, int, bytes]

_B64_LINE = 76  # RFC 2045 §6.8: at most 76 characters per encoded line


class DecodeError(ValueError):
    """The part's content is not valid in its declared transfer encoding."""


def split_trailing_breaks(data: bytes) -> tuple[bytes, bytes]:
    """(content, trailing line breaks/whitespace): base64 re-encoding keeps the tail as it was."""
    stripped = data.rstrip(b"\r\n \t")
    return stripped, data[len(stripped) :]


def decode(cte: str, data: bytes) -> bytes:
    """Decode a part body; raises DecodeError when base64 is broken."""
    if cte == "quoted-printable":
        # a2b_qp takes both "=\r\n" and "=\n" as soft breaks and keeps hard breaks as they are.
        return binascii.a2b_qp(data)
    if cte == "base64":
        try:
            return binascii.a2b_base64(data)
        except binascii.Error as exc:
            raise DecodeError(f"invalid base64: {exc}") from exc
    return data


def encode(cte: str, data: bytes, eol: bytes, original: bytes) -> bytes:
    """Encode a changed part body in `cte`; `original` is the old encoded body, whose
    trailing line breaks are kept so the bytes before the next boundary stay the same."""
    if cte == "quoted-printable":
        return qp_encode(data, eol)
    if cte == "base64":
        tail = split_trailing_breaks(original)[1]
        enc = binascii.b2a_base64(data, newline=False)
        lines = [enc[i : i + _B64_LINE] for i in range(0, len(enc), _B64_LINE)]
        return eol.join(lines) + tail
    return data


def qp_encode(data: bytes, eol: bytes) -> bytes:
    """Quoted-printable with soft breaks at 76 characters and `eol` line breaks.

    binascii.b2a_qp(istext=True) guesses the line ending from the first newline of the
    data (LF when there is none) and turns every bare LF into that ending while passing a
    bare CR through; both would change the decoded text or mix line endings. So it is only
    used when the data's breaks are all `eol`; otherwise each line is encoded in binary
    mode, which escapes stray CR and LF as =0D/=0A.
    """
    crlf = eol == b"\r\n"
    if crlf:
        n_lf = data.count(b"\n")
        clean = n_lf == data.count(b"\r") == data.count(b"\r\n")
    else:
        n_lf = 1
        clean = b"\r" not in data
    if clean:
        out = binascii.b2a_qp(data, istext=True)
        if crlf and n_lf == 0:
            # No newline to guess from: b2a_qp used LF for its soft breaks.
            out = out.replace(b"=\n", b"=\r\n")
        return out
    return eol.join(
        binascii.b2a_qp(line, istext=False).replace(b"=\n", b"=" + eol) for line in data.split(eol)
    )


def qp_splice(raw: bytes, decoded: bytes, edits: list[Edit], eol: bytes) -> bytes | None:
    """Apply `edits` (sorted (start, end, new) in `decoded` = a2b_qp(raw)) to a QP body by
    re-encoding only the lines they touch; every other line keeps its original bytes.

    That is both faster than re-encoding the whole part (b2a_qp is slow on large text)
    and leaves the least trace. Returns None when the decoded lines cannot be matched one
    to one with the encoded lines (=0A escapes, stray line breaks): encode it all then.
    """
    width = len(eol)
    # Hide soft breaks behind same-length filler so that splitting on `eol` yields the
    # encoded logical lines at their original offsets.
    lines = raw.replace(b"=" + eol, b"=" + b"_" * width).split(eol)
    if decoded.count(b"\n") != len(lines) - 1:
        return None
    crlf = width == 2
    n = len(decoded)
    out: list[bytes] = []
    raw_pos = 0  # end of what has been copied from raw
    line_no = 0  # encoded line whose start is `line_off`
    line_off = 0
    dec_pos = 0  # decoded offset where line `line_no` starts... counted lazily
    dec_line = 0
    i = 0
    while i < len(edits):
        s, e, _ = edits[i]
        ls = decoded.rfind(b"\n", 0, s) + 1
        group = [edits[i]]
        while True:
            le = decoded.find(b"\n", max(s, e - 1))
            if le < 0:
                le = n
            elif le < e:
                return None  # the edit swallows a line break
            ce = le - 1 if crlf and le < n and le > ls and decoded[le - 1] == 0x0D else le
            if e > ce:
                return None
            if i + 1 < len(edits) and edits[i + 1][0] <= ce:
                i += 1
                s, e, _ = edits[i]
                group.append(edits[i])
                continue
            break
        i += 1
        first = dec_line + decoded.count(b"\n", dec_pos, ls)
        last = first + decoded.count(b"\n", ls, ce)
        dec_pos, dec_line = ls, first
        line_off += sum(map(len, lines[line_no:first])) + (first - line_no) * width
        line_no = first
        region_end = line_off + sum(map(len, lines[first:last])) + (last - first) * width
        region_end += len(lines[last])
        pieces: list[bytes] = []
        cur = ls
        for gs, ge, new in group:
            pieces.append(decoded[cur:gs])
            pieces.append(new)
            cur = ge
        pieces.append(decoded[cur:ce])
        out.append(raw[raw_pos:line_off])
        out.append(qp_encode(b"".join(pieces), eol))
        raw_pos = region_end
    out.append(raw[raw_pos:])
    return b"".join(out)


def max_line_exceeded(data: bytes, limit: int) -> bool:
    """True when a line of `data` (without its line ending) is longer than `limit`."""
    if len(data) <= limit:
        return False
    pos = 0
    find = data.find
    n = len(data)
    while pos < n:
        nl = find(b"\n", pos)
        end = n if nl < 0 else nl
        length = end - pos
        if nl >= 0 and end > pos and data[end - 1] == 0x0D:
            length -= 1
        if length > limit:
            return True
        if nl < 0:
            return False
        pos = nl + 1
    return False


def line_length_at(data: bytes, pos: int) -> int:
    """Length (without its line ending) of the line of `data` holding offset `pos`."""
    start = data.rfind(b"\n", 0, pos) + 1
    end = data.find(b"\n", pos)
    if end < 0:
        return len(data) - start
    if end > start and data[end - 1] == 0x0D:
        end -= 1
    return end - start
