"""Network addresses as people write them (``HOST:PORT``, ``[V6]:PORT``) and as URLs need
them (an IPv6 host in brackets). One parser for every command: the gateway's listeners, the
load tool's targets, the example servers."""

from __future__ import annotations

import ipaddress

__all__ = ["Address", "format_address", "format_host", "http_url", "parse_address"]

Address = tuple[str, int]


def parse_address(text: str, *, default_host: str = "127.0.0.1") -> Address:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (``default_host``); port 0 to 65535.

    Raises ``ValueError`` with a message fit for a command-line error.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner.partition("%")[0])  # fe80::1%eth0
        except ValueError:
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}") from None
        host = inner
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"expected HOST:PORT, an IPv6 host in brackets ([::1]:80), got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host or default_host, port


def format_host(host: str) -> str:
    """``host`` as it goes before ``:PORT``: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def format_address(address: Address) -> str:
    """``HOST:PORT``, or ``[V6]:PORT``: what ``parse_address`` reads back."""
    return f"{format_host(address[0])}:{address[1]}"


def http_url(address: Address, path: str) -> str:
    """``http://HOST:PORT`` + ``path``."""
    return f"http://{format_address(address)}{path}"
