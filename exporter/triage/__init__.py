"""Triage: the methodical mail-flow diagnosis (scope, queues, tracking, connectors, DNS) as findings."""
