"""Simulated outside world for the DNS and SMTP checks: an authoritative DNS responder and a probe-only
SMTP endpoint on loopback, plus the demo organisation's zones (``demo_net``).

Nothing here sends traffic anywhere but the loopback addresses it binds.
"""

from exporter.netsim.dns_server import FAULT_KINDS, DemoDNS, FaultTable, split_txt
from exporter.netsim.smtp_server import DemoSMTP

__all__ = ["FAULT_KINDS", "DemoDNS", "DemoSMTP", "FaultTable", "split_txt"]
