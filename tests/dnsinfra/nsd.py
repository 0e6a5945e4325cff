"""A real authoritative DNS server for tests: NSD (Debian package ``nsd``) on a loopback port.

``NsdServer`` writes ``nsd.conf`` and one zone file per zone into a directory, checks every zone with
``nsd-checkzone``, runs ``nsd -d -c nsd.conf`` in the foreground as a child process (as the current user: no
chroot, no privilege drop, no remote control, no database) and waits until it answers an SOA query.

Broken zones: a zone listed in ``broken_zones`` is configured with a zone file NSD cannot load (no SOA,
bad syntax). NSD 4 then answers every query for names in that zone with ``SERVFAIL`` (no AA), which is
how a real authoritative server reports a zone it is configured for but cannot serve. Tests use it as a
real SERVFAIL (see ``tests/integration/test_dnsinfra.py::test_broken_zone_servfail``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.query
import dns.rcode

__all__ = ["NsdError", "NsdServer", "find_nsd", "find_program", "free_port"]

_SBIN = ("/usr/sbin", "/usr/local/sbin")
_BROKEN_ZONE_TEXT = "; deliberately unloadable: no SOA, and a line that is no record\nthis is not a zone file\n"


class NsdError(RuntimeError):
    """NSD could not be configured or started; the message carries its output."""


def find_program(program: str, directories: tuple[str, ...] = _SBIN) -> str | None:
    """``program`` on PATH or in ``directories`` (daemons live in sbin, which a non-root PATH may lack)."""
    found = shutil.which(program)
    if found:
        return found
    for directory in directories:
        candidate = Path(directory) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_nsd() -> str | None:
    """Path of the ``nsd`` binary (also looked for in the sbin directories), or None."""
    return find_program("nsd")


def free_port(address: str = "127.0.0.1") -> int:
    """A port that is free for both UDP and TCP on ``address`` right now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for UDP and TCP on {address}")


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _file_name(zone: str) -> str:
    return _fqdn(zone).rstrip(".").lower() + ".zone"


class NsdServer:
    """NSD serving ``zones`` (origin -> zone text) on ``address``:``port`` (None: a free port).

    ``broken_zones`` are configured with an unloadable zone file, so NSD answers SERVFAIL for them.
    ``rate_limit``: keep NSD's response rate limiting (RRL, on in Debian's build: 200 responses a
    second per client /24 and response kind; every NXDOMAIN of a zone is one kind). A client sending
    thousands of queries a second (benchmarks) meets dropped and truncated replies under it, where a
    recursive resolver would answer; benchmarks turn it off.
    """

    def __init__(
        self,
        zones: Mapping[str, str],
        directory: Path,
        address: str = "127.0.0.1",
        port: int | None = None,
        broken_zones: Iterable[str] = (),
        start_timeout: float = 10.0,
        rate_limit: bool = True,
    ) -> None:
        if not zones:
            raise ValueError("NsdServer needs at least one zone (its first one is the readiness probe)")
        self.zones = dict(zones)
        self.broken_zones = [_fqdn(z) for z in broken_zones]
        self.directory = Path(directory)
        self.address = address
        self.port = port if port is not None else free_port(address)
        self.start_timeout = start_timeout
        self.rate_limit = rate_limit
        self.start_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        nsd = find_nsd()
        checkzone = find_program("nsd-checkzone")
        if nsd is None or checkzone is None:
            raise NsdError("nsd is not installed (Debian: apt-get install nsd)")
        self._nsd, self._checkzone = nsd, checkzone

    # -- files -----------------------------------------------------------------------------------

    @property
    def conf_file(self) -> Path:
        """The generated nsd.conf."""
        return self.directory / "nsd.conf"

    @property
    def log_file(self) -> Path:
        """NSD's log file."""
        return self.directory / "nsd.log"

    def log_text(self) -> str:
        """NSD's log so far (and whatever it printed on stderr)."""
        parts = []
        for path in (self.log_file, self.directory / "nsd.stderr"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def _write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.zone"):
            stale.unlink()
        for zone, text in self.zones.items():
            path = self.directory / _file_name(zone)
            path.write_text(text)
            result = subprocess.run(
                [self._checkzone, _fqdn(zone), str(path)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise NsdError(f"nsd-checkzone rejected zone {zone}:\n{result.stdout}{result.stderr}")
        for zone in self.broken_zones:
            (self.directory / _file_name(zone)).write_text(_BROKEN_ZONE_TEXT)
        d = self.directory
        lines = [
            "server:",
            f"    ip-address: {self.address}",
            f"    port: {self.port}",
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{d}"',
            f'    pidfile: "{d / "nsd.pid"}"',
            '    database: ""',
            f'    zonelistfile: "{d / "zone.list"}"',
            f'    xfrdfile: "{d / "xfrd.state"}"',
            f'    xfrdir: "{d}"',
            f'    logfile: "{self.log_file}"',
            "    verbosity: 1",
            "    hide-version: yes",
            "    hide-identity: yes",
            "    server-count: 1",
            "    tcp-count: 64",
            *([] if self.rate_limit else ["    rrl-ratelimit: 0", "    rrl-whitelist-ratelimit: 0"]),
            "remote-control:",
            "    control-enable: no",
        ]
        for zone in [*self.zones, *self.broken_zones]:
            lines += ["zone:", f"    name: {_fqdn(zone)}", f'    zonefile: "{_file_name(zone)}"']
        self.conf_file.write_text("\n".join(lines) + "\n")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> NsdServer:
        """Write the configuration, check the zones, start NSD and wait until it answers (or raise)."""
        if self._process is not None:
            raise NsdError("NSD already running")
        self._write()
        self.log_file.unlink(missing_ok=True)
        began = time.monotonic()
        with open(self.directory / "nsd.stderr", "wb") as stderr:
            self._process = subprocess.Popen(
                [self._nsd, "-d", "-c", str(self.conf_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        probe = dns.message.make_query(_fqdn(next(iter(self.zones))), "SOA")
        deadline = began + self.start_timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise NsdError(f"nsd exited with status {code} while starting:\n{self.log_text()}")
            try:
                reply = dns.query.udp(probe, self.address, port=self.port, timeout=0.2)
            except (dns.exception.Timeout, OSError):
                reply = None
            if reply is not None and reply.rcode() == dns.rcode.NOERROR and reply.answer:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise NsdError(
                    f"nsd did not answer within {self.start_timeout:g}s on port {self.port}:\n{self.log_text()}"
                )
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Terminate NSD and wait for it; idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def reload(self, zones: Mapping[str, str], broken_zones: Iterable[str] | None = None) -> None:
        """Serve new zone data: rewrite the files and restart NSD on the same port."""
        self.stop()
        self.zones = dict(zones)
        if broken_zones is not None:
            self.broken_zones = [_fqdn(z) for z in broken_zones]
        self.start()

    @property
    def running(self) -> bool:
        """Whether the NSD process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> NsdServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
