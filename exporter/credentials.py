"""Where a server's secret comes from, and whether its authentication method can send it.

Precedence, highest first (the first level that sets anything is used, the others are ignored):

1. the server's own entry in ``exchange.servers``: ``password``, ``password_file`` or ``keytab``;
2. ``<secrets_dir>/<server name in lower case>_password``;
3. ``exchange.defaults``: ``password``, ``password_file`` or ``keytab``;
4. ``<secrets_dir>/exchange_password``.

So anything set for a server beats anything from the defaults. Within one entry (a server's, or
the defaults) at most one of ``password``, ``password_file`` and ``keytab`` may be set: two are a
configuration error, never a silent choice. With none of them, Kerberos uses the process's ticket
cache (``KRB5CCNAME``) or client keytab (``KRB5_CLIENT_KTNAME``).

No message built here contains any part of a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from exporter.errors import ConfigError

if TYPE_CHECKING:
    from exporter.settings import ConnectionSettings

SecretField = Literal["password", "password_file", "keytab"]
SECRET_FIELDS: tuple[SecretField, ...] = ("password", "password_file", "keytab")
_OTHER_AUTHS = "use auth kerberos, negotiate or ntlm (they send any Unicode password)"


@dataclass(frozen=True)
class SecretSource:
    """The one place a server's credential comes from."""

    field: SecretField | Literal["secrets_dir"]
    level: Literal["server", "defaults"]
    password: SecretStr | None = None  # an inline password
    path: Path | None = None  # the password file, secrets_dir file or keytab


class SecretProblem(ConfigError):
    """A credential problem at one setting. ``level``/``field`` say which: the loader turns them into
    the field path and line; ``str()`` names the server instead of its index."""

    def __init__(self, server: str, level: str, field: str, detail: str) -> None:
        self.server, self.level, self.field, self.detail = server, level, field, detail
        super().__init__(f"{self.path(server)}: {detail}")

    def path(self, server: str | int) -> str:
        """The setting's path, the server given by name (``[EX01]``) or index (``[0]``)."""
        if self.field == "secrets_dir":
            return "secrets_dir"
        if self.level == "defaults":
            return f"exchange.defaults.{self.field}"
        return f"exchange.servers[{server}].{self.field}"


def _entry_source(entry: ConnectionSettings, level: Literal["server", "defaults"], server: str) -> SecretSource | None:
    present = [name for name in SECRET_FIELDS if getattr(entry, name) is not None]
    if len(present) > 1:
        where = "for this server" if level == "server" else "in exchange.defaults"
        raise SecretProblem(
            server,
            level,
            present[1],
            f"{present[0]} is set {where} too: set only one of password, password_file and keytab",
        )
    if not present:
        return None
    field = present[0]
    if field == "password":
        return SecretSource("password", level, password=entry.password)
    return SecretSource(field, level, path=getattr(entry, field))


def secret_source(
    server: ConnectionSettings, name: str, defaults: ConnectionSettings, secrets_dir: Path | None
) -> SecretSource | None:
    """Where the credential of server ``name`` comes from (see the module docstring), or None."""
    source = _entry_source(server, "server", name)
    if source is not None:
        return source
    own = secrets_dir / f"{name.lower()}_password" if secrets_dir is not None else None
    if own is not None and own.is_file():
        return SecretSource("secrets_dir", "server", path=own)
    source = _entry_source(defaults, "defaults", name)
    if source is not None:
        return source
    shared = secrets_dir / "exchange_password" if secrets_dir is not None else None
    if shared is not None and shared.is_file():
        return SecretSource("secrets_dir", "defaults", path=shared)
    return None


def read_secret(path: Path, server: str, source: SecretSource) -> str:
    """The secret in ``path``, stripped; SecretProblem if it cannot be read, is not UTF-8 or is empty."""

    def problem(detail: str) -> SecretProblem:
        return SecretProblem(server, source.level, source.field, detail)

    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise problem(f"cannot read secret file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:  # its message would quote a byte of the secret and where it is
        raise problem(f"secret file {path} is not UTF-8 text: save it as UTF-8") from None
    if not value:
        raise problem(f"secret file {path} is empty")
    return value


def basic_auth_problem(username: str | None, password: str | None) -> str | None:
    """Why HTTP Basic cannot carry these credentials, or None. requests encodes both as Latin-1 (IIS
    decodes them with the server's ANSI code page), so other characters cannot be sent at all. The
    text names neither the characters nor where they are."""
    if username is not None and not _latin1(username):
        return f"the user name contains characters Basic authentication cannot send (not Latin-1); {_OTHER_AUTHS}"
    if password is not None and not _latin1(password):
        who = f" for {username}" if username else ""
        return f"the password{who} contains characters Basic authentication cannot send (not Latin-1); {_OTHER_AUTHS}"
    return None


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
