"""Point pyspf at a given name server and port.

How pyspf does DNS (``spf.py`` 2.0.14): ``spf.query.dns()`` calls the MODULE-LEVEL function
``spf.DNSLookup(name, qtype, strict, timeout)`` at call time, and expects back a list of
``((name, qtype), value)`` pairs (A/AAAA: the address text; MX: ``(preference, exchange)``; PTR: the target
without the trailing dot; TXT: the list of byte strings of one record). With dnspython installed,
``spf.DNSLookup`` is ``spf.DNSLookup_dnspython``, which calls ``dns.resolver.query()``, i.e. the process-wide
default resolver from /etc/resolv.conf: there is no parameter for a name server or port.

So: while any ``use_resolver`` block is active, ``spf.DNSLookup`` is a dispatcher that uses the
``dns.resolver.Resolver(configure=False)`` chosen by the calling thread, and falls back to whatever
``spf.DNSLookup`` was before (pyspf's own, or another module's patch such as ``exporter.dnscheck.spf``'s) in
threads that chose none; when the last block ends, that previous function is put back. The
result mapping and error handling are those of ``DNSLookup_dnspython``: NXDOMAIN and NODATA give an empty
list (pyspf counts it as a void lookup); timeouts and "no name server answered" (SERVFAIL, REFUSED) raise
``spf.TempError``, which ``check2`` reports as ``temperror``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import dns.exception
import dns.resolver
import spf  # type: ignore[import-untyped]

__all__ = ["make_resolver", "resolver_lookup", "use_resolver"]

_local = threading.local()
_install_lock = threading.Lock()
_users = 0
_previous_lookup: Any = None


def make_resolver(address: str, port: int, lifetime: float = 5.0) -> dns.resolver.Resolver:
    """A dnspython resolver asking only ``address``:``port`` (no /etc/resolv.conf, no search list)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [address]
    resolver.port = port
    resolver.lifetime = lifetime
    resolver.timeout = min(lifetime, 2.0)
    return resolver


def resolver_lookup(
    resolver: dns.resolver.Resolver, name: str, qtype: str, timeout: float
) -> list[tuple[tuple[str, str], Any]]:
    """``spf.DNSLookup_dnspython`` with an explicit resolver: pyspf's ``((name, qtype), value)`` list."""
    out: list[tuple[tuple[str, str], Any]] = []
    try:
        answers = resolver.resolve(name, qtype, lifetime=min(timeout, resolver.lifetime), search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return out
    except dns.exception.Timeout as error:
        raise spf.TempError(f"DNS {error}") from error
    except dns.resolver.NoNameservers as error:
        raise spf.TempError(f"DNS {error}") from error
    for rdata in answers:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: float = 30) -> list[tuple[tuple[str, str], Any]]:
    resolver = getattr(_local, "resolver", None)
    if resolver is None:
        return list(_previous_lookup(name, qtype, strict, timeout))
    return resolver_lookup(resolver, name, qtype, timeout)


def _install() -> None:
    global _users, _previous_lookup
    with _install_lock:
        if _users == 0:
            _previous_lookup = spf.DNSLookup
            spf.DNSLookup = _dispatch
        _users += 1


def _uninstall() -> None:
    global _users, _previous_lookup
    with _install_lock:
        _users -= 1
        if _users == 0:
            if spf.DNSLookup is _dispatch:
                spf.DNSLookup = _previous_lookup
            _previous_lookup = None


@contextlib.contextmanager
def use_resolver(resolver: dns.resolver.Resolver) -> Iterator[None]:
    """Within the block, pyspf (in this thread) sends its queries through ``resolver``."""
    _install()
    previous = getattr(_local, "resolver", None)
    _local.resolver = resolver
    try:
        yield
    finally:
        _local.resolver = previous
        _uninstall()
