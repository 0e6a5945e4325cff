"""Kerberos test infrastructure: a throwaway MIT KDC on loopback (``mitkdc.py``)."""
