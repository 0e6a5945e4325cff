"""Reading the organisation configuration keys of a scenario into the specs of ``orgconfig``.

:class:`OrgConfigParser` is a mixin of the scenario parser: it reads the server-level keys
(receive connectors, component states, certificates, service health) and the organisation-level
ones (send connectors, accepted domains, databases, RBAC), strictly, with field paths in errors.
A key left out is stored as ``None`` so its Exchange defaults are built on demand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from exporter.simulator.fields import ScenarioError
from exporter.simulator.orgconfig import (
    ACCEPTED_DOMAIN_TYPES,
    ALLOWED_SERVICES,
    AUTH_MECHANISMS,
    COMPONENTS,
    CONTENT_INDEX_STATES,
    COPY_STATUSES,
    PERMISSION_GROUPS,
    RECEIVE_CONNECTOR_KEYS,
    REQUESTERS,
    SERVICE_HEALTH_ROLES,
    SERVICE_STATES,
    TLS_AUTH_LEVELS,
    TRANSPORT_ROLES,
    AcceptedDomainSpec,
    CertificateSpec,
    ComponentSpec,
    DatabaseCopySpec,
    DatabaseSpec,
    ReceiveConnectorSpec,
    SendConnectorSpec,
    default_certificates,
    default_receive_connectors,
    parse_binding,
    parse_ip_range,
)
from exporter.simulator.orgpolicy import PolicyConfigParser

__all__ = ["OrgConfigParser"]


class OrgConfigParser(PolicyConfigParser):
    """Reads the configuration keys of a server and of the organisation (see ``scenarios/demo.yml``)."""

    SERVER_KEYS = (
        "receive_connectors",
        "default_receive_connectors",
        "components",
        "certificates",
        "default_certificates",
        "service_health",
        *PolicyConfigParser.POLICY_SERVER_KEYS,
    )
    ORG_KEYS = ("send_connectors", "accepted_domains", "databases", "rbac", *PolicyConfigParser.POLICY_ORG_KEYS)

    # -- per server ------------------------------------------------------------------------
    def server_config(
        self, data: Mapping[str, Any], where: str, name: str, fqdn: str, transport_roles: Collection[str]
    ) -> dict[str, Any]:
        """The ServerSpec fields of the server-level keys (``None`` = Exchange defaults, built lazily);
        ``transport_roles``: the TransportRole values whose setup connectors the server has."""
        out: dict[str, Any] = {
            "receive_connectors": self.receive_connectors(data, where, name, transport_roles),
            "components": self.components(data.get("components"), f"{where}.components"),
            "service_health": self.service_health(data.get("service_health"), f"{where}.service_health"),
            "certificates": None,
            "dns": self.server_dns(data, where, name),
        }
        with_defaults = self._bool(data, "default_certificates", where, True)
        if data.get("certificates") is not None or not with_defaults:
            listed = self.certificates(data.get("certificates") or [], f"{where}.certificates")
            out["certificates"] = (default_certificates(name, fqdn) if with_defaults else ()) + listed
        return out

    def receive_connectors(
        self, data: Mapping[str, Any], where: str, server: str, transport_roles: Collection[str]
    ) -> tuple[ReceiveConnectorSpec, ...] | None:
        with_defaults = self._bool(data, "default_receive_connectors", where, True)
        raw = data.get("receive_connectors")
        if raw is None and with_defaults:
            return None
        defaults = (s for s in default_receive_connectors(server) if s.transport_role in transport_roles)
        specs = list(defaults) if with_defaults else []
        for at, entry in self._entries(raw or [], f"{where}.receive_connectors", RECEIVE_CONNECTOR_KEYS):
            conn_name = self._name(entry, at)
            fields = self._connector_fields(entry, at)
            index = next((k for k, s in enumerate(specs) if s.name.lower() == conn_name.lower()), None)
            if index is None:
                specs.append(ReceiveConnectorSpec(name=conn_name, **fields))
            else:
                specs[index] = dataclasses.replace(specs[index], **fields)
        return tuple(specs)

    def _connector_fields(self, entry: Mapping[str, Any], at: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if "transport_role" in entry:
            fields["transport_role"] = self._choice(
                self._str(entry, "transport_role", at, ""), list(TRANSPORT_ROLES), f"{at}.transport_role"
            )
        if "bindings" in entry:
            bindings = self._strs(entry, "bindings", at)
            try:
                fields["bindings"] = tuple(parse_binding(b).display for b in bindings)
            except ValueError as exc:
                raise ScenarioError(f"{at}.bindings: {exc}") from None
        if "remote_ip_ranges" in entry:
            try:
                fields["remote_ip_ranges"] = tuple(
                    parse_ip_range(r).expression for r in self._strs(entry, "remote_ip_ranges", at)
                )
            except ValueError as exc:
                raise ScenarioError(f"{at}.remote_ip_ranges: {exc}") from None
        for key, names in (("permission_groups", PERMISSION_GROUPS), ("auth_mechanism", AUTH_MECHANISMS)):
            if key in entry:
                fields[key] = tuple(
                    self._choice(v, list(names), f"{at}.{key}") for v in self._strs(entry, key, at) if v != "None"
                )
        for key in ("enabled", "require_tls", "anonymous_accept_any_recipient"):
            if key in entry:
                fields[key] = self._bool(entry, key, at, False)
        if "fqdn" in entry:
            fields["fqdn"] = self._str(entry, "fqdn", at, "") or None
        if "max_message_size_bytes" in entry:
            fields["max_message_size_bytes"] = self._int(entry, "max_message_size_bytes", at, 0, minimum=1)
        return fields

    def components(self, raw: Any, where: str) -> tuple[ComponentSpec, ...]:
        specs: list[ComponentSpec] = []
        for component, value in self._mapping(raw, where).items():
            at = f"{where}.{component}"
            name = self._choice(str(component), COMPONENTS, at)
            entry = self._mapping(value, at) if isinstance(value, Mapping) else {"state": value}
            self._check_keys(entry, ["state", "requester"], at)
            state = self._choice(self._str(entry, "state", at, ""), list(SERVICE_STATES), f"{at}.state")
            requester = self._choice(self._str(entry, "requester", at, "Maintenance"), REQUESTERS, f"{at}.requester")
            specs.append(ComponentSpec(name, state, requester))
        return tuple(specs)

    def service_health(self, raw: Any, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        out: list[tuple[str, tuple[str, ...]]] = []
        for role, value in self._mapping(raw, where).items():
            at = f"{where}.{role}"
            name = self._choice(str(role), list(SERVICE_HEALTH_ROLES), at)
            entry = self._mapping(value, at)
            self._check_keys(entry, ["not_running"], at)
            out.append((name, self._strs(entry, "not_running", at)))
        return tuple(out)

    def certificates(self, raw: Any, where: str) -> tuple[CertificateSpec, ...]:
        specs: list[CertificateSpec] = []
        keys = ["subject", "domains", "services", "not_after_days", "not_before_days", "self_signed", "friendly_name"]
        for at, entry in self._entries(raw, where, keys):
            subject = self._str(entry, "subject", at, "").strip()
            if not subject.upper().startswith("CN="):
                raise ScenarioError(f"{at}.subject: expected a distinguished name such as CN=mail.contoso.com")
            services = tuple(
                self._choice(s, list(ALLOWED_SERVICES), f"{at}.services")
                for s in self._strs(entry, "services", at)
                if s != "None"
            )
            not_before = self._num(entry, "not_before_days", at, -365.0)
            not_after = self._num(entry, "not_after_days", at, 365.0)
            if not_after <= not_before:
                raise ScenarioError(f"{at}: not_after_days must be later than not_before_days")
            specs.append(
                CertificateSpec(
                    subject=subject,
                    domains=self._strs(entry, "domains", at, (subject[3:].split(",", 1)[0],)),
                    services=services,
                    not_after_days=not_after,
                    not_before_days=not_before,
                    self_signed=self._bool(entry, "self_signed", at, False),
                    friendly_name=self._str(entry, "friendly_name", at, ""),
                )
            )
        return tuple(specs)

    # -- organisation ----------------------------------------------------------------------
    def org_config(self, top: Mapping[str, Any], servers: Sequence[str]) -> dict[str, Any]:
        """The Scenario fields of the organisation-level keys (``None`` = Exchange defaults)."""
        known = {s.upper(): s for s in servers}
        out: dict[str, Any] = {
            "send_connectors": None,
            "accepted_domains": None,
            "databases": None,
            "hidden_cmdlets": frozenset(),
            **self.policy_config(top),
        }
        if top.get("send_connectors") is not None:
            out["send_connectors"] = self.send_connectors(top["send_connectors"], known)
        if top.get("accepted_domains") is not None:
            out["accepted_domains"] = self.accepted_domains(top["accepted_domains"])
        if top.get("databases") is not None:
            out["databases"] = self.databases(top["databases"], known)
        rbac = self._mapping(top.get("rbac"), "rbac")
        self._check_keys(rbac, ["hidden_cmdlets"], "rbac")
        out["hidden_cmdlets"] = frozenset(c.lower() for c in self._strs(rbac, "hidden_cmdlets", "rbac"))
        return out

    def _entries(self, raw: Any, where: str, keys: Sequence[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """``(path, mapping)`` of each item of the list ``raw``, its keys checked against ``keys``."""
        if not isinstance(raw, list):
            raise ScenarioError(f"{where}: expected a list")
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            entry = self._mapping(item, at)
            self._check_keys(entry, keys, at)
            yield at, entry

    def _name(self, entry: Mapping[str, Any], at: str) -> str:
        """The entry's required ``name`` (no backslash: it is part of ``SERVER\\Name`` identities)."""
        name = self._str(entry, "name", at, "").strip()
        if not name or "\\" in name:
            raise ScenarioError(f"{at}.name: required, without a backslash")
        return name

    def _server_names(self, entry: Mapping[str, Any], key: str, at: str, known: Mapping[str, str]) -> tuple[str, ...]:
        names = self._strs(entry, key, at)
        for name in names:
            if name.upper() not in known:
                raise ScenarioError(f"{at}.{key}: unknown server {name}")
        return tuple(known[n.upper()] for n in names)

    def send_connectors(self, raw: Any, known: Mapping[str, str]) -> tuple[SendConnectorSpec, ...]:
        specs: list[SendConnectorSpec] = []
        for at, entry in self._entries(
            raw,
            "send_connectors",
            [
                "name",
                "address_spaces",
                "smart_hosts",
                "source_transport_servers",
                "enabled",
                "port",
                "require_tls",
                "tls_auth_level",
                "cloud_services_mail_enabled",
                "fqdn",
                "use_external_dns_servers",
            ],
        ):
            name = self._name(entry, at)
            spaces = self._strs(entry, "address_spaces", at, ("SMTP:*;1",))
            for space in spaces:
                if not space.strip() or space.count(";") > 1:
                    raise ScenarioError(f"{at}.address_spaces: {space!r} is not TYPE:address;cost")
            level = entry.get("tls_auth_level")
            specs.append(
                SendConnectorSpec(
                    name=name,
                    address_spaces=spaces,
                    smart_hosts=tuple(h.strip().strip("[]") for h in self._strs(entry, "smart_hosts", at)),
                    source_transport_servers=(
                        self._server_names(entry, "source_transport_servers", at, known)
                        if entry.get("source_transport_servers") is not None
                        else None
                    ),
                    enabled=self._bool(entry, "enabled", at, True),
                    port=self._int(entry, "port", at, 25, minimum=1),
                    require_tls=self._bool(entry, "require_tls", at, False),
                    tls_auth_level=(
                        None
                        if level is None
                        else self._choice(str(level), list(TLS_AUTH_LEVELS), f"{at}.tls_auth_level")
                    ),
                    cloud_services_mail_enabled=self._bool(entry, "cloud_services_mail_enabled", at, False),
                    fqdn=self._str(entry, "fqdn", at, "") or None,
                    use_external_dns_servers=self._bool(entry, "use_external_dns_servers", at, False),
                )
            )
        self._unique([s.name for s in specs], "send_connectors")
        return tuple(specs)

    @staticmethod
    def _unique(names: Sequence[str], where: str) -> None:
        folded = [n.lower() for n in names]
        for name in names:
            if folded.count(name.lower()) > 1:
                raise ScenarioError(f"{where}: duplicate name {name}")

    def _changed(self, entry: Mapping[str, Any], at: str) -> float | None:
        if entry.get("changed_minutes_ago") is None:
            return None
        minutes = self._num(entry, "changed_minutes_ago", at, 0.0)
        if not 0 <= minutes <= 60 * 24 * 365:
            raise ScenarioError(f"{at}.changed_minutes_ago: must be between 0 and 525600")
        return minutes

    def accepted_domains(self, raw: Any) -> tuple[AcceptedDomainSpec, ...]:
        specs: list[AcceptedDomainSpec] = []
        keys = ["name", "domain", "type", "default", "match_subdomains", "address_book_enabled"]
        keys.append("changed_minutes_ago")
        for at, entry in self._entries(raw, "accepted_domains", keys):
            domain = self._str(entry, "domain", at, "").strip()
            if not domain or " " in domain:
                raise ScenarioError(f"{at}.domain: expected a domain such as contoso.com or *.contoso.com")
            kind = self._choice(
                self._str(entry, "type", at, "Authoritative"), list(ACCEPTED_DOMAIN_TYPES), f"{at}.type"
            )
            specs.append(
                AcceptedDomainSpec(
                    name=self._str(entry, "name", at, domain),
                    domain=domain,
                    type=kind,
                    default=self._bool(entry, "default", at, False),
                    match_subdomains=self._bool(entry, "match_subdomains", at, False),
                    address_book_enabled=self._bool(entry, "address_book_enabled", at, kind == "Authoritative"),
                    changed_minutes_ago=self._changed(entry, at),
                )
            )
        if not specs:
            raise ScenarioError("accepted_domains: an organisation has at least one accepted domain")
        defaults = [s for s in specs if s.default]
        if len(defaults) > 1:
            raise ScenarioError("accepted_domains: only one domain can be the default")
        if not defaults:
            specs[0] = dataclasses.replace(specs[0], default=True)
        self._unique([s.name for s in specs], "accepted_domains")
        return tuple(specs)

    def databases(self, raw: Any, known: Mapping[str, str]) -> tuple[DatabaseSpec, ...]:
        specs: list[DatabaseSpec] = []
        copy_keys = [
            "server",
            "status",
            "copy_queue_length",
            "replay_queue_length",
            "content_index_state",
            "activation_suspended",
        ]
        for at, entry in self._entries(raw, "databases", ["name", "copies"]):
            name = self._name(entry, at)
            copies: list[DatabaseCopySpec] = []
            for k, (cat, copy) in enumerate(self._entries(entry.get("copies"), f"{at}.copies", copy_keys)):
                (server,) = self._server_names({"server": copy.get("server", "")}, "server", cat, known)
                copies.append(
                    DatabaseCopySpec(
                        server=server,
                        status=self._choice(
                            self._str(copy, "status", cat, "Mounted" if k == 0 else "Healthy"),
                            list(COPY_STATUSES),
                            f"{cat}.status",
                        ),
                        copy_queue_length=self._int(copy, "copy_queue_length", cat, 0),
                        replay_queue_length=self._int(copy, "replay_queue_length", cat, 0),
                        content_index_state=self._choice(
                            self._str(copy, "content_index_state", cat, "Healthy"),
                            list(CONTENT_INDEX_STATES),
                            f"{cat}.content_index_state",
                        ),
                        activation_suspended=self._bool(copy, "activation_suspended", cat, False),
                        activation_preference=k + 1,
                    )
                )
            if not copies:
                raise ScenarioError(f"{at}.copies: a database has at least one copy")
            self._unique([c.server for c in copies], f"{at}.copies")
            specs.append(DatabaseSpec(name, tuple(copies)))
        self._unique([s.name for s in specs], "databases")
        return tuple(specs)
