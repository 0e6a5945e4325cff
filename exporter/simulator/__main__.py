"""Run the simulator in the foreground: ``python -m exporter.simulator --scenario FILE``.

Prints one JSON document on stdout (endpoints, CA file, control URL, users) once every endpoint
listens, then runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType

from exporter.errors import MailflowError
from exporter.simulator import Simulator, demo_scenario_path, load_scenario


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the simulator, print the endpoint map, wait for a signal."""
    parser = argparse.ArgumentParser(prog="python -m exporter.simulator", description=__doc__)
    parser.add_argument("--scenario", default=None, help="scenario YAML (default: the bundled demo)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA and certificate")
    parser.add_argument("--cert-file", help="PEM certificate chain to use with --tls instead of a generated one")
    parser.add_argument("--key-file", help="PEM private key for --cert-file")
    parser.add_argument("--port-base", type=int, default=None, help="server i listens on port-base + i")
    parser.add_argument("--control-port", type=int, default=None, help="serve the JSON control API on this port")
    parser.add_argument(
        "--kerberos-keytab",
        help="also accept Kerberos (Negotiate) with the service keys in this keytab (needs the kerberos extra)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        scenario = load_scenario(args.scenario or demo_scenario_path())
        sim = Simulator(
            scenario,
            host=args.host,
            tls=args.tls,
            port_base=args.port_base,
            cert_file=args.cert_file,
            key_file=args.key_file,
            control_port=args.control_port,
            kerberos_keytab=args.kerberos_keytab,
        )
        sim.start()
    except (MailflowError, OSError, RuntimeError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    info = {
        "servers": sim.endpoints(),
        "ca_file": sim.ca_file,
        "control_url": sim.control_url,
        "users": sorted(scenario.users),
        "kerberos": sim.kerberos is not None,
        "resource_uri": "http://schemas.microsoft.com/powershell/Microsoft.Exchange",
    }
    print(json.dumps(info, indent=2), flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
