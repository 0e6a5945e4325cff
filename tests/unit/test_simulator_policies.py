"""Scenario keys of the simulated policies and DNS settings: what a scenario may plant, and the clear
error (naming the field) for what Exchange itself would refuse."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.simulator import Scenario
from exporter.simulator.fields import ScenarioError
from tests.integration.conftest import small_org


def org(**keys: Any) -> dict[str, Any]:
    data = small_org(("EX01",))
    data["accepted_domains"] = [{"domain": "contoso.sim", "default": True}, {"domain": "fabrikam.sim"}]
    data.update(keys)
    return data


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"transport_rules": [{"name": "R", "reject_status_code": "5.1.1"}]},
         "transport_rules[0].reject_status_code: Exchange accepts 5.7.1 or 5.7.900 to 5.7.999"),
        ({"transport_rules": [{"name": "R", "mode": "Test"}]}, "transport_rules[0].mode: unknown value 'Test'"),
        ({"transport_rules": [{"name": "R"}, {"name": "r"}]}, "transport_rules[1].name: duplicate name r"),
        ({"transport_rules": [{"name": "A", "priority": 0}, {"name": "B", "priority": 5}]},
         "transport_rules: priorities must be 0 to n-1, each once"),
        ({"email_address_policies": [{"name": "P", "templates": ["SMTP:@tailspin.sim"]}]},
         "email_address_policies P: tailspin.sim in SMTP:@tailspin.sim is not an accepted domain"),
        ({"email_address_policies": [{"name": "P", "templates": ["SMTP:@contoso.sim", "SMTP:@fabrikam.sim"]}]},
         "email_address_policies[0].templates: only one primary (upper-case SMTP:) template"),
        ({"email_address_policies": [{"name": "P", "templates": ["contoso.sim"]}]},
         "email_address_policies[0].templates: 'contoso.sim' is not an SMTP template"),
    ],
)  # fmt: skip
def test_what_exchange_would_refuse_is_a_clear_scenario_error(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        Scenario.from_dict(org(**keys))
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_bad_dns_setting_names_its_field() -> None:
    data = org()
    data["servers"][0]["dns"] = {"adapters": [{"name": "LAN", "dns_servers": ["dc01"]}]}
    with pytest.raises(ScenarioError, match=r"servers\[0\]\.dns\.adapters\[0\]\.dns_servers: 'dc01' is not an IP"):
        Scenario.from_dict(data)
    data["servers"][0]["dns"] = {"external_protocol": "Tcp"}
    with pytest.raises(ScenarioError, match=r"servers\[0\]\.dns\.external_protocol: unknown value 'Tcp'"):
        Scenario.from_dict(data)


def test_defaults_are_what_setup_creates() -> None:
    scenario = Scenario.from_dict(org())
    assert scenario.transport_rules is None  # setup creates no transport rule
    (policy,) = scenario.effective_email_address_policies
    assert (policy.name, policy.priority, policy.templates) == ("Default Policy", None, ("SMTP:@contoso.sim",))
    dns = scenario.servers[0].effective_dns
    assert dns.external_adapter_enabled and dns.external_adapter_guid.int == 0 and dns.external_dns_servers == ()
    assert [a.dns_servers for a in dns.adapters] == [("192.0.2.10",)]
