"""Ports on the loopback interface."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    with socket.socket() as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def require_port(port: int, what: str) -> None:
    """Fail (never skip) with the command that starts the missing service."""
    if not port_open(port, timeout=2.0):
        pytest.fail(f"{what} is not answering on 127.0.0.1:{port}; run `make services`")
