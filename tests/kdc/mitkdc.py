"""A throwaway MIT Kerberos realm for tests: ``krb5kdc`` (Debian ``krb5-kdc``) on a loopback port.

``MitKdc(directory, realm)`` writes ``krb5.conf`` and ``kdc.conf`` into ``directory`` (the KDC listens on
127.0.0.1 only, UDP and TCP on one free port; no DNS lookups, no hostname canonicalisation, no reverse
DNS), creates the database with ``kdb5_util create -s`` (stash file, throwaway master password), and runs
``krb5kdc -n`` in the foreground as a child process, which ``stop()`` terminates. Principals and keytabs
are made with ``kadmin.local`` (no kadmind is needed); ``kinit`` fills a ticket cache from a keytab.

The Kerberos libraries find this realm only through environment variables (``KRB5_CONFIG`` and friends).
Environment variables are process-wide, so ``environment()`` sets them for a ``with`` block and restores
the previous values afterwards; ``env`` gives the same variables for child processes. The block also
points the default ticket cache, keytabs and replay cache into ``directory`` so nothing touches the
machine's ``/tmp/krb5cc_*``, ``/etc/krb5.keytab`` or ``/var/tmp``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.dnsinfra.nsd import find_program, free_port

__all__ = ["KdcError", "MitKdc", "find_kdc"]

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin")
_PROGRAMS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
_MASTER_PASSWORD = "master-key-of-a-throwaway-test-realm"


class KdcError(RuntimeError):
    """The KDC could not be configured or started, or a kadmin/kinit command failed (with its output)."""


def find_kdc() -> dict[str, str] | None:
    """Paths of krb5kdc, kdb5_util, kadmin.local and kinit (sbin included), or None if one is missing."""
    found = {name: find_program(name, _SBIN) for name in _PROGRAMS}
    if any(path is None for path in found.values()):
        return None
    return {name: path for name, path in found.items() if path is not None}


class MitKdc:
    """An MIT KDC for ``realm`` serving from ``directory`` on ``address``:``port`` (None: a free port)."""

    def __init__(
        self,
        directory: Path,
        realm: str = "CONTOSO.SIM",
        address: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        programs = find_kdc()
        if programs is None:
            raise KdcError("MIT Kerberos is not installed (Debian: krb5-kdc krb5-admin-server krb5-user)")
        self._programs = programs
        self.directory = Path(directory)
        self.realm = realm
        self.address = address
        self.port = port if port is not None else free_port(address)
        self.start_timeout = start_timeout
        self.start_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- files -----------------------------------------------------------------------------------

    @property
    def krb5_conf(self) -> Path:
        return self.directory / "krb5.conf"

    @property
    def kdc_conf(self) -> Path:
        return self.directory / "kdc.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "kdc.log"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point the Kerberos libraries and tools at this realm (and only at it)."""
        d = self.directory
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            # Defaults that would otherwise be the machine's: an empty private ticket cache, keytabs
            # that do not exist (a test names its keytab explicitly), a private replay cache.
            "KRB5CCNAME": f"FILE:{d / 'default.ccache'}",
            "KRB5_KTNAME": f"FILE:{d / 'no-default.keytab'}",
            "KRB5_CLIENT_KTNAME": f"FILE:{d / 'no-default-client.keytab'}",
            "KRB5RCACHEDIR": str(d),
        }

    def _write(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        listen = f"{self.address}:{self.port}"
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {self.realm}\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            # The service host name is used as given (no DNS canonicalisation, no reverse lookup): the
            # SPN is HTTP/<the name in the URL>, as with Windows clients and Exchange.
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n"
            "    ticket_lifetime = 1h\n"
            "    forwardable = true\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        kdc = {listen}\n"
            "    }\n"
            "[domain_realm]\n"
            f"    localhost = {self.realm}\n"
            f"    .{self.realm.lower()} = {self.realm}\n"
            f"    {self.realm.lower()} = {self.realm}\n"
        )
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"    kdc_listen = {listen}\n"
            f"    kdc_tcp_listen = {listen}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        database_name = {d / 'principal'}\n"
            f"        key_stash_file = {d / 'stash'}\n"
            f"        acl_file = {d / 'kadm5.acl'}\n"
            f"        kdc_listen = {listen}\n"
            f"        kdc_tcp_listen = {listen}\n"
            "        max_life = 1h\n"
            "        max_renewable_life = 1h\n"
            # Pre-authentication required, as Active Directory does: a wrong password is then refused
            # by the KDC (logged PREAUTH_FAILED, what AD counts towards lockout), not found by the client.
            "        default_principal_flags = +preauth\n"
            "        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            "    }\n"
            "[logging]\n"
            f"    kdc = FILE:{self.log_file}\n"
            f"    admin_server = FILE:{d / 'kadmin.log'}\n"
            f"    default = FILE:{d / 'krb5lib.log'}\n"
        )
        (d / "kadm5.acl").write_text("")

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        result = subprocess.run(
            [self._programs[program], *args], capture_output=True, text=True, env=env, check=False, timeout=30
        )
        if check and result.returncode != 0:
            raise KdcError(f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MitKdc:
        """Create the realm and start krb5kdc; returns once it accepts TCP connections."""
        started = time.monotonic()
        self._write()
        self._run("kdb5_util", "create", "-s", "-r", self.realm, "-P", _MASTER_PASSWORD)
        env = {**os.environ, **self.env}
        stderr = (self.directory / "krb5kdc.stderr").open("wb")
        with stderr:
            self._process = subprocess.Popen(
                [self._programs["krb5kdc"], "-n", "-r", self.realm, "-P", str(self.directory / "kdc.pid")],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=env,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise KdcError(f"krb5kdc exited with {self._process.returncode}:\n{self.log_text()}")
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), timeout=0.5):
                self.start_seconds = time.monotonic() - started
                return self
            time.sleep(0.05)
        self.stop()
        raise KdcError(f"krb5kdc did not listen on {self.address}:{self.port} within {self.start_timeout}s")

    def stop(self) -> None:
        """Terminate krb5kdc (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> MitKdc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def environment(self) -> Iterator[dict[str, str]]:
        """Set ``env`` in this process for the block (the Kerberos libraries read it); restore afterwards."""
        saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            yield self.env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # -- administration --------------------------------------------------------------------------

    def principal(self, name: str) -> str:
        """``name`` with this realm appended unless it names one."""
        return name if "@" in name else f"{name}@{self.realm}"

    def kadmin(self, query: str) -> str:
        """Run one ``kadmin.local`` query against the database; return its output."""
        return self._run("kadmin.local", "-r", self.realm, "-q", query).stdout

    def add_principal(self, name: str, password: str | None = None) -> str:
        """Create a principal: with ``password`` (a user), else with a random key (a service)."""
        key = f"-pw {password}" if password is not None else "-randkey"
        self.kadmin(f"addprinc {key} {self.principal(name)}")
        return self.principal(name)

    def export_keytab(self, path: Path, *principals: str) -> Path:
        """Write the principals' current keys to the keytab ``path`` (``-norandkey``: passwords keep working)."""
        for name in principals:
            self.kadmin(f"ktadd -k {path} -norandkey {self.principal(name)}")
        return path

    def kinit(self, principal: str, keytab: Path, ccache: str) -> None:
        """Fill the ticket cache ``ccache`` (``FILE:/path``) with a TGT for ``principal`` from ``keytab``."""
        self._run("kinit", "-k", "-t", str(keytab), "-c", ccache, self.principal(principal))

    def log_text(self) -> str:
        """The KDC's log so far (and what krb5kdc printed)."""
        parts = []
        for path in (self.log_file, self.directory / "krb5kdc.stderr"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def count(self, text: str) -> int:
        """How many lines of the KDC log contain ``text`` (e.g. ``PREAUTH_FAILED``)."""
        if not self.log_file.exists():
            return 0
        return sum(text in line for line in self.log_file.read_text(errors="replace").splitlines())
