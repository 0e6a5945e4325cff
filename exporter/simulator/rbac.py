"""Exchange RBAC in the simulator: which commands the runspace of a user's remote session holds.

Exchange builds the runspace (its InitialSessionState) of a ``Microsoft.Exchange`` session from the
management roles assigned to the authenticated user, when the session opens:

- every cmdlet of those roles becomes a public proxy *function*;
- Get-Help and Get-Command are added to every session as proxy functions;
- five PowerShell cmdlets stay public: Out-Default, Get-FormatData, Select-Object, Measure-Object,
  Exit-PSSession;
- every other PowerShell command (Where-Object, ForEach-Object, Sort-Object, Format-List, the
  aliases) is private: calling one from the client fails with CommandNotFoundException, exactly as
  an unknown name does.

Sources:

- The runspace: Exchange 2013 CU23 (KB5000871) decompiled, PiratesRE/exchange_diff (unofficial),
  ``Microsoft.Exchange.Configuration.ObjectModel/Configuration/Authorization/InitialSessionStateBuilder.cs``
  (``alwaysPublicCommands``, ``GetProxyCommandEntry``: role cmdlets as public functions, every
  default PowerShell cmdlet and alias made private) and ``ExchangeRunspaceConfiguration.cs``
  (``RefreshCombinedCmdletsAndScripts`` adds the Get-Help and Get-Command role entries).
- The roles: the same repository, ``Microsoft.Exchange.Management.RbacDefinition/Tasks/
  CannedRoles_Enterprise.cs`` (the built-in roles setup creates). The lists below are the cmdlet
  names of its entries for the five roles. Exchange 2016/2019 are assumed to hold the same entries
  for the cmdlets the simulator implements [inferred: no 2016/2019 definition was available].
- The role group: View-Only Organization Management = Monitoring, View-Only Configuration,
  View-Only Recipients (MicrosoftDocs/OfficeDocs-Exchange,
  ``Exchange/ExchangeServer2013/view-only-organization-management-exchange-2013-help.md``).

Not modelled: the parameters of a role entry (Exchange's proxy function has only the parameters the
role entry lists), management scopes, custom roles. The role set is read when the shell opens, as
Exchange builds the runspace then [inferred from the builder above: a later role change needs a
new session].
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.simulator.fields import ScenarioError

__all__ = [
    "DEFAULT_ROLES",
    "POWERSHELL_COMMANDS",
    "ROLES",
    "ROLE_GROUPS",
    "Runspace",
    "expand_roles",
    "parse_users",
    "runspace",
]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Built-in management role -> the cmdlets of its role entries (CannedRoles_Enterprise.cs, above).
ROLES: Mapping[str, frozenset[str]] = {
    "View-Only Configuration": _names(  # 197 cmdlets
        """
        Add-GlobalMonitoringOverride Add-ServerMonitoringOverride Enable-ExchangeCertificate
        Export-ActiveSyncLog Export-AutoDiscoverConfig Export-DlpPolicyCollection Export-JournalRuleCollection
        Export-TransportRuleCollection Export-UMCallDataRecord Get-AcceptedDomain
        Get-ActiveSyncDeviceAccessRule Get-ActiveSyncDeviceAutoblockThreshold Get-ActiveSyncDeviceClass
        Get-ActiveSyncMailboxPolicy Get-ActiveSyncOrganizationSettings Get-ActiveSyncVirtualDirectory
        Get-AddressBookPolicy Get-AddressList Get-AdminAuditLogConfig Get-ADPermission Get-ADServerSettings
        Get-ADSite Get-AdSiteLink Get-AgentLog Get-App Get-AuditLogSearch Get-AuthConfig Get-AuthRedirect
        Get-AuthServer Get-AutodiscoverVirtualDirectory Get-AvailabilityAddressSpace Get-AvailabilityConfig
        Get-ClassificationRuleCollection Get-ClientAccessArray Get-ClientAccessServer Get-CmdletExtensionAgent
        Get-ContentFilterConfig Get-ContentFilterPhrase Get-DatabaseAvailabilityGroup
        Get-DatabaseAvailabilityGroupConfiguration Get-DatabaseAvailabilityGroupNetwork Get-DataClassification
        Get-DeliveryAgentConnector Get-DetailsTemplate Get-DlpPolicy Get-DlpPolicyTemplate
        Get-DomainController Get-EcpVirtualDirectory Get-EdgeSubscription Get-EdgeSyncServiceConfig
        Get-EmailAddressPolicy Get-EventLogLevel Get-ExchangeAssistanceConfig Get-ExchangeCertificate
        Get-ExchangeDiagnosticInfo Get-ExchangeServer Get-ExchangeServerAccessLicense
        Get-ExchangeServerAccessLicenseUser Get-FailedContentIndexDocuments Get-FederatedDomainProof
        Get-FederatedOrganizationIdentifier Get-FederationInformation Get-FederationTrust Get-ForeignConnector
        Get-FrontendTransportService Get-GlobalAddressList Get-GlobalMonitoringOverride Get-HealthReport
        Get-HostedContentFilterRule Get-HybridConfiguration Get-ImapSettings
        Get-IntraOrganizationConfiguration Get-IntraOrganizationConnector Get-IPAllowListConfig
        Get-IPAllowListEntry Get-IPAllowListProvider Get-IPAllowListProvidersConfig Get-IPBlockListConfig
        Get-IPBlockListEntry Get-IPBlockListProvider Get-IPBlockListProvidersConfig Get-IRMConfiguration
        Get-JournalRule Get-MailboxAuditBypassAssociation Get-MailboxDatabase Get-MailboxDatabaseCopyStatus
        Get-MailboxServer Get-MailboxTransportService Get-MalwareFilteringServer Get-MalwareFilterPolicy
        Get-MalwareFilterRule Get-ManagementRole Get-ManagementRoleAssignment Get-ManagementRoleEntry
        Get-ManagementScope Get-MapiVirtualDirectory Get-Message Get-MessageCategory Get-MessageClassification
        Get-MigrationBatch Get-MigrationConfig Get-MigrationEndpoint Get-MigrationStatistics Get-MigrationUser
        Get-MigrationUserStatistics Get-MobileDeviceMailboxPolicy Get-MonitoringItemHelp
        Get-MonitoringItemIdentity Get-NetworkConnectionInfo Get-Notification Get-OabVirtualDirectory
        Get-OfflineAddressBook Get-OrganizationalUnit Get-OrganizationConfig Get-OrganizationRelationship
        Get-OutlookAnywhere Get-OutlookProtectionRule Get-OutlookProvider Get-OwaMailboxPolicy
        Get-OwaVirtualDirectory Get-PartnerApplication Get-PendingFederatedDomain
        Get-PhysicalAvailabilityReport Get-PolicyTipConfig Get-PopSettings Get-PowerShellVirtualDirectory
        Get-PublicFolderDatabase Get-PushNotificationSubscription Get-Queue Get-QueueDigest
        Get-ReceiveConnector Get-RecipientFilterConfig Get-RemoteDomain Get-ResourceConfig Get-ResubmitRequest
        Get-RetentionPolicy Get-RetentionPolicyTag Get-RMSTemplate Get-RoleAssignmentPolicy Get-RoleGroup
        Get-RoleGroupMember Get-RpcClientAccess Get-SearchDocumentFormat Get-SendConnector
        Get-SenderFilterConfig Get-SenderIdConfig Get-SenderReputationConfig Get-ServerComponentState
        Get-ServerHealth Get-ServerMonitoringOverride Get-ServiceAvailabilityReport Get-ServiceStatus
        Get-SettingOverride Get-SharingPolicy Get-SiteMailbox Get-SiteMailboxDiagnostics
        Get-SiteMailboxProvisioningPolicy Get-SmimeConfig Get-StoreUsageStatistics Get-SyncConfig
        Get-SystemMessage Get-TextMessagingAccount Get-ThrottlingPolicy Get-ThrottlingPolicyAssociation
        Get-TransportAgent Get-TransportConfig Get-TransportPipeline Get-TransportRule Get-TransportRuleAction
        Get-TransportRulePredicate Get-TransportServer Get-TransportService Get-Trust Get-UMActiveCalls
        Get-UMAutoAttendant Get-UMCallRouterSettings Get-UMCallSummaryReport Get-UMDialPlan Get-UMHuntGroup
        Get-UMIPGateway Get-UMMailboxPolicy Get-UMService Get-UserPrincipalNamesSuffix
        Get-WebServicesVirtualDirectory Get-X400AuthoritativeDomain Invoke-MonitoringProbe
        New-SearchDocumentFormat Remove-GlobalMonitoringOverride Remove-SearchDocumentFormat
        Remove-ServerMonitoringOverride Retry-Queue Set-OrganizationConfig Set-SearchDocumentFormat
        Set-ServerMonitor Set-SmimeConfig Test-FederationTrustCertificate Test-OrganizationRelationship
        """
    ),
    "View-Only Recipients": _names(  # 74 cmdlets
        """
        Enable-UMCallAnsweringRule Export-MailboxDiagnosticLogs Get-ActiveSyncDevice
        Get-ActiveSyncDeviceStatistics Get-ActiveSyncMailboxPolicy Get-AddressBookPolicy Get-AddressList
        Get-ADServerSettings Get-CalendarDiagnosticAnalysis Get-CalendarDiagnosticLog Get-CalendarNotification
        Get-CalendarProcessing Get-CASMailbox Get-Contact Get-DistributionGroup Get-DistributionGroupMember
        Get-DomainController Get-DynamicDistributionGroup Get-Group Get-HybridConfiguration Get-InboxRule
        Get-LogonStatistics Get-Mailbox Get-MailboxAutoReplyConfiguration Get-MailboxCalendarConfiguration
        Get-MailboxCalendarFolder Get-MailboxFolderPermission Get-MailboxFolderStatistics
        Get-MailboxJunkEmailConfiguration Get-MailboxMessageConfiguration Get-MailboxPermission
        Get-MailboxRegionalConfiguration Get-MailboxSpellingConfiguration Get-MailboxStatistics
        Get-MailContact Get-MailPublicFolder Get-MailUser Get-MessageTrackingLog Get-MessageTrackingReport
        Get-MigrationBatch Get-MigrationConfig Get-MigrationEndpoint Get-MigrationStatistics Get-MigrationUser
        Get-MigrationUserStatistics Get-MobileDevice Get-MobileDeviceMailboxPolicy Get-MobileDeviceStatistics
        Get-MoveRequest Get-MoveRequestStatistics Get-OrganizationalUnit Get-PublicFolder
        Get-PublicFolderClientPermission Get-PublicFolderItemStatistics Get-PublicFolderMailboxDiagnostics
        Get-PublicFolderMailboxMigrationRequest Get-PublicFolderMailboxMigrationRequestStatistics
        Get-PublicFolderMigrationRequest Get-PublicFolderMigrationRequestStatistics
        Get-PublicFolderMoveRequest Get-PublicFolderMoveRequestStatistics Get-PublicFolderStatistics
        Get-Recipient Get-RemoteMailbox Get-ResourceConfig Get-SecurityPrincipal Get-UMCallAnsweringRule
        Get-UMCallDataRecord Get-UMMailbox Get-UMMailboxPIN Get-User Get-UserPhoto
        Search-MessageTrackingReport Set-ADServerSettings
        """
    ),
    "Message Tracking": _names(  # 21 cmdlets
        """
        Add-AvailabilityAddressSpace Get-ADServerSettings Get-AvailabilityAddressSpace Get-DomainController
        Get-ExchangeServer Get-ExchangeServerAccessLicense Get-ExchangeServerAccessLicenseUser Get-Mailbox
        Get-MessageTrackingLog Get-MessageTrackingReport Get-Recipient New-IntraOrganizationConnector
        New-OrganizationRelationship Remove-AvailabilityAddressSpace Resume-MailboxExportRequest
        Search-MessageTrackingReport Set-ADServerSettings Set-AvailabilityConfig
        Set-IntraOrganizationConnector Set-OrganizationRelationship Write-AdminAuditLog
        """
    ),
    "Monitoring": _names(  # 51 cmdlets
        """
        Dump-ProvisioningCache Export-ActiveSyncLog Get-ADServerSettings Get-ClientAccessServer
        Get-DomainController Get-ExchangeServer Get-ExchangeServerAccessLicense
        Get-ExchangeServerAccessLicenseUser Get-FailedContentIndexDocuments Get-Mailbox Get-MailboxDatabase
        Get-PublicFolderDatabase Get-Recipient Get-SearchDocumentFormat Get-StoreUsageStatistics
        Get-UMDialPlan Get-UMIPGateway New-SearchDocumentFormat Remove-SearchDocumentFormat
        Reset-ProvisioningCache Set-ADServerSettings Set-SearchDocumentFormat Test-ActiveSyncConnectivity
        Test-ArchiveConnectivity Test-AssistantHealth Test-CalendarConnectivity Test-EcpConnectivity
        Test-EdgeSynchronization Test-ExchangeSearch Test-FederationTrust Test-ImapConnectivity
        Test-IPAllowListProvider Test-IPBlockListProvider Test-IRMConfiguration Test-Mailflow
        Test-MAPIConnectivity Test-MRSHealth Test-OAuthConnectivity Test-OrganizationRelationship
        Test-OutlookConnectivity Test-OutlookWebServices Test-PopConnectivity Test-PowerShellConnectivity
        Test-ReplicationHealth Test-SenderId Test-ServiceHealth Test-SiteMailbox Test-SmtpConnectivity
        Test-UMConnectivity Test-WebServicesConnectivity Write-AdminAuditLog
        """
    ),
    "Transport Queues": _names(  # 13 cmdlets
        """
        Export-Message Get-DomainController Get-Message Get-Queue Get-ReceiveConnector Redirect-Message
        Remove-Message Resume-Message Resume-Queue Retry-Queue Suspend-Message Suspend-Queue
        Write-AdminAuditLog
        """
    ),
}

#: Built-in role groups this simulator knows -> their roles (OfficeDocs-Exchange, above).
ROLE_GROUPS: Mapping[str, tuple[str, ...]] = {
    "View-Only Organization Management": ("Monitoring", "View-Only Configuration", "View-Only Recipients"),
}

#: The roles of a scenario user given as ``name: password``: the set the README documents for the
#: exporter's account, so the existing scenarios run with exactly that account.
DEFAULT_ROLES: tuple[str, ...] = ("View-Only Configuration", "Message Tracking", "Monitoring")

#: The PowerShell commands of every Exchange session and their CommandType (InitialSessionStateBuilder).
POWERSHELL_COMMANDS: Mapping[str, str] = {
    "Exit-PSSession": "Cmdlet",
    "Get-Command": "Function",
    "Get-FormatData": "Cmdlet",
    "Get-Help": "Function",
    "Measure-Object": "Cmdlet",
    "Out-Default": "Cmdlet",
    "Select-Object": "Cmdlet",
}


@dataclass(frozen=True)
class Runspace:
    """The commands of one session: lower-case name -> (name, CommandType), and the roles behind it."""

    roles: tuple[str, ...]
    commands: Mapping[str, tuple[str, str]]

    def has(self, name: str) -> bool:
        """Whether the session has a command called ``name`` (case-insensitive)."""
        return name.lower() in self.commands


@functools.lru_cache(maxsize=64)
def runspace(roles: tuple[str, ...]) -> Runspace:
    """The runspace of a session whose user holds ``roles`` (canonical role names)."""
    commands: dict[str, tuple[str, str]] = {}
    for role in roles:
        for name in ROLES[role]:
            commands[name.lower()] = (name, "Function")
    for name, kind in POWERSHELL_COMMANDS.items():
        commands[name.lower()] = (name, kind)
    return Runspace(roles, commands)


def expand_roles(names: Iterable[Any], where: str) -> tuple[str, ...]:
    """Canonical role names for role and role-group names (case-insensitive), in a stable order.

    Raises :class:`ScenarioError` naming ``where`` for an unknown name or an empty list (Exchange
    gives a user without any role no session at all, which the simulator does not model).
    """
    known: dict[str, tuple[str, ...]] = {r.lower(): (r,) for r in ROLES}
    known.update({g.lower(): roles for g, roles in ROLE_GROUPS.items()})
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name.strip().lower() not in known:
            choices = ", ".join([*ROLES, *ROLE_GROUPS])
            raise ScenarioError(f"{where}: unknown role {name!r}; known roles and role groups: {choices}")
        out += [r for r in known[name.strip().lower()] if r not in out]
    if not out:
        raise ScenarioError(f"{where}: a user needs at least one role")
    return tuple(sorted(out))


def parse_users(data: Any) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """The scenario's ``users``: (name -> password, lower-case name -> roles).

    Forms: ``{name: password}`` (the user holds :data:`DEFAULT_ROLES`), ``{name: {password, roles}}``,
    or a list of ``{username, password, roles}`` (``roles`` optional: the default set).
    """
    passwords: dict[str, str] = {}
    roles: dict[str, tuple[str, ...]] = {}

    def add(name: Any, password: Any, role_names: Any, where: str) -> None:
        if role_names is None:
            granted = DEFAULT_ROLES
        elif isinstance(role_names, list | tuple):
            granted = expand_roles(role_names, f"{where}.roles")
        else:
            raise ScenarioError(f"{where}.roles: expected a list of role names")
        passwords[str(name)] = str(password)
        roles[str(name).lower()] = granted

    if data is None:
        return passwords, roles
    if isinstance(data, Mapping):
        for name, value in data.items():
            if isinstance(value, Mapping):
                _only(value, ("password", "roles"), f"users.{name}")
                if "password" not in value:
                    raise ScenarioError(f"users.{name}: needs a password")
                add(name, value["password"], value.get("roles"), f"users.{name}")
            else:
                add(name, value, None, f"users.{name}")
    elif isinstance(data, list):
        for i, entry in enumerate(data):
            where = f"users[{i}]"
            if not isinstance(entry, Mapping):
                raise ScenarioError(f"{where}: expected a mapping")
            _only(entry, ("username", "password", "roles"), where)
            if "username" not in entry or "password" not in entry:
                raise ScenarioError(f"{where}: needs username and password")
            add(entry["username"], entry["password"], entry.get("roles"), where)
    else:
        raise ScenarioError("users: expected a mapping username -> password (or {password, roles}) or a list")
    return passwords, roles


def _only(data: Mapping[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
