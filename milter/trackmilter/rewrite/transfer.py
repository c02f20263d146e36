"""Content-Transfer-Encoding decode/encode (RFC 2045 §6) with the message's line ending."""

from __future__ import annotations

import binascii

__all__ = [
    "IDENTITY",
    "KNOWN",
    "DecodeError",
    "Edit",
    "decode",
    "encode",
    "line_length_at",
    "max_line_exceeded",
    "qp_encode",
    "qp_splice",
    "split_trailing_breaks",
]

IDENTITY = frozenset({"7bit", "8bit", "binary"})
KNOWN = IDENTITY | {"quoted-printable", "base64"}

Edit = tuple[int, int, bytes]

_B64_LINE = 76  # RFC 2045 §6.8: at most 76 characters per encoded line
_QP_LINE = 76  # RFC 2045 §6.7 (5): likewise for quoted-printable
_CLUSTER_GAP = 480  # decoded bytes between edits re-encoded rather than located anew


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
    if b"\n" not in data and b"\r" not in data:
        # One line (what qp_splice passes most): b2a_qp's soft breaks are LF.
        out = binascii.b2a_qp(data, istext=True)
        return out if eol == b"\n" else out.replace(b"=\n", b"=\r\n")
    if eol == b"\r\n":
        n_lf = data.count(b"\n")
        clean = n_lf == data.count(b"\r") == data.count(b"\r\n")
    else:
        clean = b"\r" not in data
    if clean:
        # There is a newline, and it is `eol`: b2a_qp takes that for all its breaks.
        return binascii.b2a_qp(data, istext=True)
    return eol.join(
        binascii.b2a_qp(line, istext=False).replace(b"=\n", b"=" + eol) for line in data.split(eol)
    )


class _QPCursor:
    """Map decoded offsets (a2b_qp of raw) to raw offsets, moving forward only.

    Each "=XX" escape is 2 bytes longer in raw and each soft break "=" + eol 1 + len(eol)
    bytes longer, so the raw offset follows from the '=' before it; they are counted
    incrementally, so mapping all the links of a part reads it about once. The caller
    checks what it gets, so an '=' that is neither only costs the fast path.
    """

    __slots__ = ("_raw", "_soft", "_dec", "_pos")

    def __init__(self, raw: bytes, soft: bytes) -> None:
        self._raw = raw
        self._soft = soft
        self._dec = 0
        self._pos = 0

    def raw_offset(self, dec: int) -> int:
        """Where the encoding of decoded byte `dec` starts (before a soft break that precedes
        it); -1 when it cannot be found. `dec` must not go backwards."""
        raw, soft, pos = self._raw, self._soft, self._pos
        extra = len(soft) - 2  # a soft break is 1 + len(eol) longer; 2 are counted for '='
        overlap = len(soft) - 1  # a soft break may straddle the end of the last count
        target = pos + dec - self._dec
        est = target  # a lower bound: the estimate only ever grows to the answer
        eq = sb = 0
        counted = pos
        for _ in range(64):
            if est > len(raw) or est < counted:
                return -1
            eq += raw.count(b"=", counted, est)
            sb += raw.count(soft, max(pos, counted - overlap), est)
            counted = est
            new = target + 2 * eq + extra * sb
            if new == est:
                self._dec, self._pos = dec, est
                return est
            est = new
        return -1


def _expansion(raw: bytes, start: int, end: int) -> int:
    """How much longer raw[start:end] (no line break inside) is than its decoding."""
    return 2 * raw.count(b"=", start, end)


def qp_splice(raw: bytes, decoded: bytes, edits: list[Edit], eol: bytes) -> bytes | None:
    """Apply `edits` (sorted (start, end, new) in `decoded` = a2b_qp(raw)) to a QP body by
    re-encoding only the physical lines they touch; all else keeps its bytes.

    The re-encoded lines end where the old ones did, before the old soft or hard line
    break, which stays: a soft break may stand between any two encoded characters. That is
    both faster than re-encoding the whole part (b2a_qp is slow) and leaves the least
    trace. Returns None when a region cannot be located with certainty (odd escapes): the
    caller then encodes the whole part.
    """
    width = len(eol)
    cursor = _QPCursor(raw, b"=" + eol)
    # [raw start, raw end, decoded start, decoded end, first edit, past last edit]
    regions: list[list[int]] = []
    for k, s, e in _clusters(edits):
        rs = cursor.raw_offset(s)
        re_ = rs if e == s else cursor.raw_offset(e)
        if rs < 0 or re_ < 0:
            return None
        j = raw.rfind(eol, 0, rs)
        start = 0 if j < 0 else j + width  # the physical line holding the edit's start
        j = raw.find(eol, re_)
        if j < 0:
            j = len(raw)
        end = j - 1 if j > re_ and raw[j - 1] == 0x3D else j  # up to its soft break's '='
        d_start = s - (rs - start - _expansion(raw, start, rs))
        d_end = e + (end - re_ - _expansion(raw, re_, end))
        first, past = k
        if regions and start < regions[-1][1]:
            last = regions[-1]
            last[1], last[3], last[5] = max(end, last[1]), max(d_end, last[3]), past
        else:
            regions.append([start, end, d_start, d_end, first, past])
    out: list[bytes] = []
    copied = 0  # end of what has been copied from raw
    for start, end, d_start, d_end, first, past in regions:
        # Exactly these decoded bytes, or no splice at all.
        if d_start < 0 or binascii.a2b_qp(raw[start:end]) != decoded[d_start:d_end]:
            return None
        pieces: list[bytes] = []
        cur = d_start
        for gs, ge, new in edits[first:past]:
            pieces.append(decoded[cur:gs])
            pieces.append(new)
            cur = ge
        pieces.append(decoded[cur:d_end])
        encoded = qp_encode(b"".join(pieces), eol)
        if raw.startswith(b"=", end):
            encoded = _room_for_soft_break(encoded, eol)
        out.append(raw[copied:start])
        out.append(encoded)
        copied = end
    out.append(raw[copied:])
    return b"".join(out)


def _clusters(edits: list[Edit]) -> list[tuple[tuple[int, int], int, int]]:
    """((first, past last) edit, start, end) of runs of edits close enough together that
    re-encoding the text between them costs less than locating each on its own."""
    out: list[tuple[tuple[int, int], int, int]] = []
    first = 0
    start, end = edits[0][0], edits[0][1]
    for k in range(1, len(edits)):
        s, e, _ = edits[k]
        if s - end > _CLUSTER_GAP:
            out.append(((first, k), start, end))
            first, start = k, s
        end = max(end, e)
    out.append(((first, len(edits)), start, end))
    return out


def _room_for_soft_break(encoded: bytes, eol: bytes) -> bytes:
    """b2a_qp lets its last line reach 76 characters; an old soft break's '=' follows here,
    so break once more before the last character (or escape) to stay within 76."""
    line_start = encoded.rfind(eol) + len(eol) if eol in encoded else 0
    length = len(encoded) - line_start
    if length < _QP_LINE:
        return encoded
    cut = len(encoded) - (3 if encoded[-3:-2] == b"=" else 1)
    return encoded[:cut] + b"=" + eol + encoded[cut:]


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
