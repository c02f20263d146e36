"""Lab: a private Postfix instance, a fake remote MX and milter processes, for tests and demos."""

from __future__ import annotations

from trackmilter_lab.fakemx import FakeMX, RcptAttempt, ReceivedMessage, Reply, default_rcpt_rule
from trackmilter_lab.milterproc import MilterProcess, postfix_can_connect, unix_socket_accepts
from trackmilter_lab.postfix import (
    PostfixError,
    PostfixInstance,
    free_port,
    make_socket_dir,
    postfix_available,
    send,
    wait_until,
)

__all__ = [
    "FakeMX",
    "MilterProcess",
    "PostfixError",
    "PostfixInstance",
    "RcptAttempt",
    "ReceivedMessage",
    "Reply",
    "default_rcpt_rule",
    "free_port",
    "make_socket_dir",
    "postfix_available",
    "postfix_can_connect",
    "send",
    "unix_socket_accepts",
    "wait_until",
]
