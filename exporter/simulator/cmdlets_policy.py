"""Get-TransportRule, Get-EmailAddressPolicy and Get-NetworkConnectionInfo (registered when ``cmdlets`` is imported).

Parameters as the cmdlets' documentation lists them (MicrosoftDocs/office-docs-powershell,
``exchange/exchange-ps/exchange/Get-TransportRule.md`` ...): Get-TransportRule [[-Identity]
RuleIdParameter] [-State Enabled|Disabled] [-DlpPolicy] [-Filter] [-ResultSize] [-DomainController];
Get-EmailAddressPolicy [[-Identity]] [-IncludeMailboxSettingOnlyPolicy] [-DomainController];
Get-NetworkConnectionInfo [[-Identity] ServerIdParameter] [-DomainController] (no -Identity: the
local server, i.e. the endpoint's). The identities accept no wildcards ("Accept wildcard characters:
False"): a value with ``*`` that names nothing is not found, like any other. -Filter (an OPath on
Description) is not simulated: it is refused as not simulated rather than ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from exporter.simulator import objects_policy
from exporter.simulator.cmdlets import Args, Context, Param, cmdlet, not_found, target_server
from exporter.simulator.records import CmdletError, Output, Record, emit, not_simulated, parameter_error

__all__: list[str] = []

_RULE_TASKS = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks"
_SYSTEM_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
_DC = Param("DomainController")
T = TypeVar("T")


def _exact(ctx: Context, cmdlet_name: str, identity: str | None, items: Sequence[tuple[T, Sequence[str]]]) -> list[T]:
    """The items whose keys equal -Identity (case-insensitive; no wildcards), or the not-found record."""
    if identity is None:
        return [item for item, _ in items]
    wanted = identity.casefold()
    found = [item for item, keys in items if any(k.casefold() == wanted for k in keys)]
    if not found:
        raise not_found(ctx, cmdlet_name, identity)
    return found


@cmdlet(
    "Get-TransportRule",
    f"{_RULE_TASKS}.GetTransportRule",
    [
        Param("Identity", position=0),
        Param("State"),
        Param("DlpPolicy"),
        Param("Filter"),
        Param("ResultSize", "resultsize"),
        _DC,
    ],
)
def get_transport_rule(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-TransportRule [[-Identity] Name|DN|GUID] [-State Enabled|Disabled] [-ResultSize N|Unlimited]."""
    if args.get("Filter") is not None:
        raise CmdletError(not_simulated("Get-TransportRule -Filter", "an OPath on Description"))
    state = args.get("State")
    if state is not None and str(state).lower() not in ("enabled", "disabled"):
        raise CmdletError(
            parameter_error(
                "Get-TransportRule",
                f"{_RULE_TASKS}.GetTransportRule",
                "CannotConvertArgumentNoMessage",
                f"Cannot bind parameter 'State'. Cannot convert value \"{state}\" to type "
                f'"{_RULE_TASKS}.RuleState". Error: "Unable to match the identifier name {state} to a valid '
                'enumerator name. Specify one of the following enumerator names and try again:\nEnabled, Disabled"',
            )
        )
    specs = ctx.scenario.transport_rules or ()
    org = ctx.scenario
    keyed = [
        (s, (s.name, objects_policy.transport_rule_dn(org, s), str(objects_policy.transport_rule_guid(org, s))))
        for s in specs
    ]
    rules = _exact(ctx, "Get-TransportRule", args.get("Identity"), keyed)
    if state is not None:
        rules = [r for r in rules if r.state.lower() == str(state).lower()]
    if args.get("DlpPolicy") is not None:
        rules = []  # the simulated rules enforce no DLP policy
    limit = args.get("ResultSize", 1000)  # None: Unlimited
    for rule in rules[: limit if limit is not None else None]:
        yield emit(objects_policy.transport_rule(ctx.scenario, rule, ctx.timeline))


@cmdlet(
    "Get-EmailAddressPolicy",
    f"{_SYSTEM_TASKS}.GetEmailAddressPolicy",
    [Param("Identity", position=0), Param("IncludeMailboxSettingOnlyPolicy", "switch"), _DC],
)
def get_email_address_policy(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-EmailAddressPolicy [[-Identity] Name|DN|GUID]: in priority order, the default policy last."""
    # By priority, the default policy (Lowest) last.
    specs = sorted(ctx.scenario.effective_email_address_policies, key=lambda s: (s.priority is None, s.priority or 0))
    keyed = [(s, (s.name, str(objects_policy.email_address_policy_guid(ctx.scenario, s)))) for s in specs]
    for spec in _exact(ctx, "Get-EmailAddressPolicy", args.get("Identity"), keyed):
        yield emit(objects_policy.email_address_policy(ctx.scenario, spec, ctx.timeline))


@cmdlet(
    "Get-NetworkConnectionInfo",
    f"{_SYSTEM_TASKS}.GetNetworkConnectionInfo",
    [Param("Identity", position=0), _DC],
)
def get_network_connection_info(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-NetworkConnectionInfo [[-Identity] SERVER]: one object per network adapter of the server."""
    server = target_server(ctx, "Get-NetworkConnectionInfo", args.get("Identity"))
    for adapter in server.effective_dns.adapters:
        yield emit(objects_policy.network_connection_info(adapter))
