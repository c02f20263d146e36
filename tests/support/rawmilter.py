"""A minimal milter that speaks the protocol on a unix socket itself (no libmilter).

Usage: python rawmilter.py unix:/path/to/sock [--replacement FILE] [--chunk-size N]
                            [--die-after N] [--record FILE]

It negotiates protocol version 6 with one action, SMFIF_CHGBODY, asks for every event and
answers SMFIR_CONTINUE to each. At end of message it replaces the body: with the bytes of
`--replacement` (CRLF line ends, as on the wire), or else with the original body in which
every "original" reads "REPLACED" (same length). The new body goes out in SMFIR_REPLBODY
packets of `--chunk-size` bytes (libmilter's MILTER_CHUNK_SIZE, 65535, by default), then
the final SMFIR_CONTINUE.

With `--die-after N` the process exits (os._exit, no reply, no clean close: what a crash
or SIGKILL does) right after sending the N-th SMFIR_REPLBODY packet of a message: the MTA
has received part of the replacement and then loses the connection. N = 0 dies at end of
message before any replacement. With `--record`, one JSON line per end of message is
appended to FILE (and synced) before anything is sent: queue id, original body size,
replacement size, packets in the replacement, and how many it will send before dying.

Postfix connects as user postfix: start it with umask 007 in a directory made by
trackmilter_lab.make_socket_dir (tests use trackmilter_lab.MilterProcess).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import struct
import sys
import threading

# Commands from the MTA (Sendmail's mfdef.h; Postfix's milter8.c).
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# Replies to the MTA.
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"

SMFIF_CHGBODY = 0x02
MILTER_VERSION = 6
MILTER_CHUNK_SIZE = 65535

_NO_REPLY = {SMFIC_MACRO, SMFIC_ABORT, SMFIC_QUIT_NC}


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    """One milter packet: 32-bit length (command byte included), command, data."""
    return struct.pack("!I", len(data) + 1) + cmd + data


def macros(data: bytes) -> dict[str, str]:
    """The name/value pairs of an SMFIC_MACRO packet (after its command-code byte)."""
    items = data[1:].split(b"\0")
    return {items[i].decode(errors="replace"): items[i + 1].decode(errors="replace")
            for i in range(0, len(items) - 1, 2)}


class Options:
    replacement: bytes | None = None
    chunk_size: int = MILTER_CHUNK_SIZE
    die_after: int | None = None
    record: str | None = None
    record_lock = threading.Lock()


class Handler(socketserver.BaseRequestHandler):
    """One MTA connection: every SMTP session (or cleanup's own session) gets one."""

    def setup(self) -> None:
        self.body: list[bytes] = []
        self.queue_id = ""

    def read_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def handle(self) -> None:
        sock: socket.socket = self.request
        while True:
            head = self.read_exact(5)
            if head is None:
                return
            length = struct.unpack("!I", head[:4])[0]
            cmd = head[4:5]
            data = self.read_exact(length - 1) if length > 1 else b""
            if data is None:
                return
            if cmd == SMFIC_OPTNEG:
                # Version 6, we may replace the body, and we want every event with a reply.
                sock.sendall(packet(SMFIC_OPTNEG, struct.pack("!III", MILTER_VERSION,
                                                               SMFIF_CHGBODY, 0)))
            elif cmd == SMFIC_MACRO:
                self.queue_id = macros(data).get("i", self.queue_id)
            elif cmd == SMFIC_QUIT:
                return
            elif cmd in (SMFIC_ABORT, SMFIC_QUIT_NC):
                self.body = []
            elif cmd == SMFIC_MAIL:
                self.body = []
                sock.sendall(packet(SMFIR_CONTINUE))
            elif cmd == SMFIC_BODY:
                self.body.append(data)
                sock.sendall(packet(SMFIR_CONTINUE))
            elif cmd == SMFIC_BODYEOB:
                self.end_of_message(sock, data)
            elif cmd not in _NO_REPLY:
                sock.sendall(packet(SMFIR_CONTINUE))

    def end_of_message(self, sock: socket.socket, data: bytes) -> None:
        original = b"".join(self.body) + data
        self.body = []
        new = (Options.replacement if Options.replacement is not None
               else original.replace(b"original", b"REPLACED"))
        size = Options.chunk_size
        chunks = [new[i:i + size] for i in range(0, len(new), size)] or [b""]
        die = Options.die_after
        self.record({"queue_id": self.queue_id, "original_bytes": len(original),
                     "replacement_bytes": len(new), "packets": len(chunks),
                     "sent_before_dying": die if die is not None and die < len(chunks)
                     else None})
        for n, chunk in enumerate(chunks):
            if die is not None and n >= die:
                break
            sock.sendall(packet(SMFIR_REPLBODY, chunk))
        if die is not None and die < len(chunks):
            os._exit(3)  # a crash: no final reply, no orderly close
        sock.sendall(packet(SMFIR_CONTINUE))

    def record(self, entry: dict[str, object]) -> None:
        if Options.record is None:
            return
        with Options.record_lock, open(Options.record, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="unix:/path/to/socket")
    parser.add_argument("--replacement", help="file with the new body (CRLF line ends)")
    parser.add_argument("--chunk-size", type=int, default=MILTER_CHUNK_SIZE)
    parser.add_argument("--die-after", type=int, default=None,
                        help="exit after sending this many SMFIR_REPLBODY packets")
    parser.add_argument("--record", help="append one JSON line per end of message")
    args = parser.parse_args(argv)
    if not args.socket.startswith("unix:"):
        parser.error("only unix:/path sockets")
    path = args.socket[len("unix:"):]
    if args.replacement:
        with open(args.replacement, "rb") as f:
            Options.replacement = f.read()
    Options.chunk_size = args.chunk_size
    Options.die_after = args.die_after
    Options.record = args.record
    if os.path.exists(path):
        os.unlink(path)
    with Server(path, Handler) as server:
        print(f"rawmilter listening on {path}", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
