"""A small authoritative DNS responder on loopback, for the demo and for tests.

``DemoDNS`` serves the zones it is given (zone-file texts, parsed with dnspython) over UDP and TCP, each in
a background thread, and answers the way an authoritative server does (checked against NSD in
``tests/integration/test_dnsinfra.py``):

* names inside its zones: ``AA`` set; the RRset asked for in ANSWER;
* a name that does not exist: ``NXDOMAIN`` with the zone's SOA in AUTHORITY;
* a name that exists (or is an empty non-terminal) without the type: ``NOERROR``, empty ANSWER, SOA in
  AUTHORITY (NODATA);
* a CNAME: the CNAME in ANSWER, chased while the target lies in one of its zones (the rcode is the one of
  the last name, RFC 6604); a CNAME loop stops at the repeat;
* a name outside every zone: ``REFUSED`` (it is not a recursive resolver);
* UDP answers larger than the client's limit (512 bytes, or its EDNS payload size) come back with ``TC``
  and empty sections, so clients retry over TCP.

Not implemented (not needed here): wildcards, delegations below a zone apex, DNAME, DNSSEC, zone transfers.

Faults are switched at run time with ``server.faults.set(name_glob, kind, rtype=None)``: ``servfail``,
``refused`` or ``timeout`` (the query is dropped), or ``answer`` with ``address=`` (and optionally
``text=``): matching A (AAAA for an IPv6 address) queries get that address, TXT queries that text, other
types NODATA, whatever the zones hold, even for names outside them. That is how a DNS blocklist answers
a resolver it refuses (Spamhaus: 127.255.255.254 for every query through a public resolver, with a TXT
naming the reason) and how a resolver that rewrites NXDOMAIN answers (an address outside 127.0.0.0/8).
``set_zones`` swaps the data atomically while serving.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

__all__ = ["FAULT_KINDS", "DemoDNS", "FaultTable", "parse_zones", "split_txt"]

log = logging.getLogger(__name__)

#: The fault kinds ``FaultTable.set`` accepts.
FAULT_KINDS = ("servfail", "timeout", "refused", "answer")

_MAX_CHASE = 16
_POLL = 0.2
_TCP_IDLE = 10.0
_EDNS_PAYLOAD = 1232


def split_txt(value: str, size: int = 255) -> str:
    """Zone-file TXT rdata for ``value``: quoted character-strings of at most ``size`` bytes each.

    A TXT record longer than 255 bytes must be published as several strings in one record; readers
    join them without a separator (RFC 7208 3.3), so ``split_txt(long_spf)`` round-trips exactly.
    """
    if not 1 <= size <= 255:
        raise ValueError("a DNS character-string holds 1 to 255 bytes")
    data = value.encode("utf-8")
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return " ".join(_quote(chunk) for chunk in chunks)


def _quote(chunk: bytes) -> str:
    out = []
    for byte in chunk:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _origin(name: str) -> dns.name.Name:
    return dns.name.from_text(name if name.endswith(".") else name + ".")


@dataclass(frozen=True)
class _Zone:
    origin: dns.name.Name
    zone: dns.zone.Zone
    soa: dns.rrset.RRset
    names: frozenset[dns.name.Name]  # every owner name plus the empty non-terminals above it


def _load(origin_text: str, text: str) -> _Zone:
    origin = _origin(origin_text)
    zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)
    soa_rds = zone.find_rdataset(origin, dns.rdatatype.SOA)
    minimum = soa_rds[0].minimum
    soa = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.SOA)
    soa.update(soa_rds)
    soa.ttl = min(soa_rds.ttl, minimum)  # RFC 2308 section 3: the negative-caching TTL
    names: set[dns.name.Name] = set()
    for owner in zone.nodes:
        name = owner
        while name != origin and name.is_subdomain(origin) and name not in names:
            names.add(name)
            name = name.parent()
        names.add(origin)
    return _Zone(origin, zone, soa, frozenset(names))


def parse_zones(zones: Mapping[str, str]) -> tuple[_Zone, ...]:
    """Parse zone texts (origin -> zone file text); raises dnspython's error on bad data."""
    loaded = [_load(origin, text) for origin, text in zones.items()]
    # Deepest origin first, so the closest enclosing zone wins.
    loaded.sort(key=lambda z: len(z.origin.labels), reverse=True)
    return tuple(loaded)


def _rtype(rtype: str | int | None) -> int | None:
    if rtype is None:
        return None
    if isinstance(rtype, int):
        return rtype
    return int(dns.rdatatype.from_text(rtype.upper()))


class FaultTable:
    """Injected faults by query name (shell-style glob, case-insensitive) and optionally type; thread-safe.

    The most recently set matching entry wins. Names are matched without the trailing dot, so
    ``"*.bl.test"`` matches ``2.0.0.127.bl.test``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[str, str, int | None]] = []
        self._answers: dict[tuple[str, int | None], tuple[str, str | None]] = {}

    def set(
        self,
        name_glob: str,
        kind: str,
        rtype: str | int | None = None,
        *,
        address: str | None = None,
        text: str | None = None,
    ) -> None:
        """Make queries for names matching ``name_glob`` (and of type ``rtype`` when given) fail with
        ``kind``, or, for ``answer``, be answered with ``address`` (A/AAAA) and ``text`` (TXT)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if (kind == "answer") != (address is not None):
            raise ValueError("address= goes with the answer kind, and only with it")
        if address is not None:
            ipaddress.ip_address(address)  # ValueError for anything else
        glob = name_glob.lower().rstrip(".") or "."
        code = _rtype(rtype)
        with self._lock:
            self._entries = [e for e in self._entries if (e[0], e[2]) != (glob, code)]
            self._entries.append((glob, kind, code))
            answers = {k: v for k, v in self._answers.items() if k != (glob, code)}
            if address is not None:
                answers[(glob, code)] = (address, text)
            self._answers = answers

    def clear(self, name_glob: str | None = None) -> None:
        """Remove every fault, or only those set for ``name_glob``."""
        with self._lock:
            if name_glob is None:
                self._entries = []
                self._answers = {}
            else:
                glob = name_glob.lower().rstrip(".") or "."
                self._entries = [e for e in self._entries if e[0] != glob]
                self._answers = {k: v for k, v in self._answers.items() if k[0] != glob}

    def match(self, qname: dns.name.Name, qtype: int) -> str | None:
        """The fault kind for this query, or None."""
        found = self._find(qname, qtype)
        return found[1] if found else None

    def planted(self, qname: dns.name.Name, qtype: int) -> tuple[str, str | None] | None:
        """``(address, text)`` of the ``answer`` fault for this query, or None."""
        found = self._find(qname, qtype)
        if found is None or found[1] != "answer":
            return None
        return self._answers.get((found[0], found[2]))

    def _find(self, qname: dns.name.Name, qtype: int) -> tuple[str, str, int | None] | None:
        entries = self._entries  # the list is replaced, never mutated: no lock needed to read
        if not entries:
            return None
        text = qname.to_text(omit_final_dot=True).lower() or "."
        for glob, kind, code in reversed(entries):
            if (code is None or code == qtype) and fnmatch.fnmatchcase(text, glob):
                return glob, kind, code
        return None

    def __len__(self) -> int:
        return len(self._entries)


class DemoDNS:
    """Authoritative DNS responder for ``zones`` (origin -> zone-file text) on ``host``:``port`` (0: any free).

    Serves UDP and TCP on the same port. Use as a context manager or call ``start()``/``stop()``.
    """

    def __init__(self, zones: Mapping[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self._zones = parse_zones(zones)
        self.host = host
        self._requested_port = port
        self._port = 0
        self.faults = FaultTable()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._count = 0
        self._recent: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=2000)

    # -- data ------------------------------------------------------------------------------------

    def set_zones(self, zones: Mapping[str, str]) -> None:
        """Replace all zone data; queries in flight see either the old or the new data, never a mix."""
        self._zones = parse_zones(zones)

    @property
    def origins(self) -> list[str]:
        """The origins served, without the trailing dot."""
        return [z.origin.to_text(omit_final_dot=True) for z in self._zones]

    @property
    def query_count(self) -> int:
        """Queries received so far (including dropped and faulted ones)."""
        return self._count

    def recent_queries(self) -> list[tuple[str, str, str]]:
        """The last (up to 2000) queries as (transport, name, type), oldest first."""
        with self._lock:
            return list(self._recent)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (UDP and TCP), known once started."""
        return self._port

    @property
    def address(self) -> str:
        """The address listened on."""
        return self.host

    def start(self) -> DemoDNS:
        """Bind UDP and TCP and start serving in background threads."""
        if self._udp is not None:
            raise RuntimeError("DemoDNS already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last_error: OSError | None = None
        for _ in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((self.host, self._requested_port))
                port = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, port))
                tcp.listen(64)
            except OSError as error:
                udp.close()
                tcp.close()
                last_error = error
                if self._requested_port:
                    raise
                continue
            break
        else:
            raise OSError(f"no free UDP+TCP port on {self.host}: {last_error}")
        udp.settimeout(_POLL)
        tcp.settimeout(_POLL)
        self._udp, self._tcp, self._port = udp, tcp, port
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._serve_udp, name=f"demo-dns-udp-{port}", daemon=True),
            threading.Thread(target=self._serve_tcp, name=f"demo-dns-tcp-{port}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.debug("DemoDNS serving %s on %s port %d", ", ".join(self.origins), self.host, port)
        return self

    def stop(self) -> None:
        """Stop serving and close every socket; idempotent."""
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None

    def __enter__(self) -> DemoDNS:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- answering -------------------------------------------------------------------------------

    def _find_zone(self, name: dns.name.Name) -> _Zone | None:
        for zone in self._zones:
            if name.is_subdomain(zone.origin):
                return zone
        return None

    def handle(self, wire: bytes, transport: str = "udp") -> bytes | None:
        """Answer one query in wire format; None means no answer (dropped: timeout fault or garbage)."""
        with self._lock:
            self._count += 1
        try:
            query = dns.message.from_wire(wire)
        except dns.message.ShortHeader:
            return None
        except Exception:
            if len(wire) < 12:
                return None
            # Unparseable body: FORMERR with the id and opcode echoed, no sections.
            header = bytearray(wire[:12])
            header[2] = 0x80 | (header[2] & 0x79)
            header[3] = dns.rcode.FORMERR
            return bytes(header[:4]) + b"\x00" * 8
        response = self._respond(query, transport)
        if response is None:
            return None
        if transport == "tcp":
            return response.to_wire(max_size=65535)
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query, our_payload=_EDNS_PAYLOAD)
            truncated.flags = response.flags | dns.flags.TC
            truncated.set_rcode(response.rcode())
            return truncated.to_wire(max_size=limit)

    def _respond(self, query: dns.message.Message, transport: str) -> dns.message.Message | None:
        response = dns.message.make_response(query, our_payload=_EDNS_PAYLOAD)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self._lock:
            self._recent.append((transport, qname.to_text(), dns.rdatatype.to_text(qtype)))
        fault = self.faults.match(qname, qtype)
        if fault == "timeout":
            return None
        if fault == "answer":
            self._planted(response, qname, qtype)
            return response
        if fault == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if (
            fault == "refused"
            or question.rdclass != dns.rdataclass.IN
            or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
        ):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        zone = self._find_zone(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        response.flags |= dns.flags.AA
        self._answer(response, zone, qname, qtype)
        return response

    def _answer(
        self, response: dns.message.Message, zone: _Zone, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
    ) -> None:
        current = qname
        seen = {qname}
        for _ in range(_MAX_CHASE):
            node = zone.zone.get_node(current)
            if node is None:
                if current not in zone.names:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(zone.soa)
                return
            if qtype == dns.rdatatype.ANY:
                for rdataset in node.rdatasets:
                    response.answer.append(self._rrset(current, rdataset))
                return
            rdataset = node.get_rdataset(dns.rdataclass.IN, qtype)
            if rdataset is not None:
                response.answer.append(self._rrset(current, rdataset))
                return
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None or qtype == dns.rdatatype.CNAME:
                response.authority.append(zone.soa)
                return
            response.answer.append(self._rrset(current, cname))
            target: dns.name.Name = cname[0].target
            next_zone = self._find_zone(target)
            if target in seen or next_zone is None:
                return
            seen.add(target)
            current, zone = target, next_zone

    def _planted(self, response: dns.message.Message, qname: dns.name.Name, qtype: int) -> None:
        """The answer an ``answer`` fault plants: its address for A/AAAA, its text for TXT, else NODATA."""
        planted = self.faults.planted(qname, qtype)
        if planted is None:  # cleared between match and here: answer as if nothing were planted
            response.set_rcode(dns.rcode.SERVFAIL)
            return
        address, text = planted
        version = ipaddress.ip_address(address).version
        response.flags |= dns.flags.AA
        if qtype == (dns.rdatatype.A if version == 4 else dns.rdatatype.AAAA):
            response.answer.append(dns.rrset.from_text(qname, 60, "IN", "A" if version == 4 else "AAAA", address))
        elif qtype == dns.rdatatype.TXT and text is not None:
            response.answer.append(dns.rrset.from_text(qname, 60, "IN", "TXT", split_txt(text)))

    @staticmethod
    def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype, rdataset.covers)
        rrset.update(rdataset)
        return rrset

    # -- transports ------------------------------------------------------------------------------

    def _serve_udp(self) -> None:
        sock = self._udp
        assert sock is not None
        while not self._stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            try:
                reply = self.handle(wire, "udp")
            except Exception:  # pragma: no cover - a bug here must not kill the server
                log.exception("DemoDNS failed to answer a UDP query")
                continue
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        sock = self._tcp
        assert sock is not None
        while not self._stop.is_set():
            try:
                conn, _peer = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        conn.settimeout(_TCP_IDLE)
        try:
            for wire in _tcp_messages(conn):
                reply = self.handle(wire, "tcp")
                if reply is None:
                    continue  # a timeout fault: keep the connection, send nothing
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()


def _tcp_messages(conn: socket.socket) -> Iterator[bytes]:
    while True:
        header = _recv_exact(conn, 2)
        if header is None:
            return
        (length,) = struct.unpack("!H", header)
        body = _recv_exact(conn, length)
        if body is None:
            return
        yield body


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
