"""DNS test infrastructure: NSD on loopback (nsd.py), the test zones with intended verdicts (zones.py),
pyspf pointed at a given server (pyspf_dns.py), DemoSMTP endpoints with every certificate kind (smtp.py)."""
