"""The synthetic mail-flow probe: Test-Mailflow between servers, and a message sent through the published
MX whose delivery is confirmed from message tracking (``exporter.probe.collector``)."""
