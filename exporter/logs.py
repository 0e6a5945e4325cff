"""Structured logging: logfmt (default) or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=exporter.service msg="..."``: one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            line += ' exc="' + self.formatException(record.exc_info).replace("\n", "\\n").replace('"', "'") + '"'
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


#: Libraries whose own records carry raw payloads and tracebacks (pypsrp logs every WSMan read timeout
#: at ERROR with urllib3's whole traceback): shown only at debug level, and then as debug records.
LIBRARIES = ("pypsrp", "psrpcore", "spnego", "urllib3", "requests", "requests_credssp", "gssapi", "krb5")


class LibraryFilter(logging.Filter):
    """Keeps library records below the default levels: the exporter logs one plain line per failed
    poll itself; the library's text and traceback are the detail, for ``--log-level debug`` only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] not in LIBRARIES:
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    """Configure the root logger once; quiet chatty libraries (their records appear at debug only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(LibraryFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # urllib3's InsecureRequestWarning & co. as one log line, not raw stderr
    for noisy in (*LIBRARIES, "apscheduler"):
        # Library debug output can include request bodies; keep it off even at debug level.
        logging.getLogger(noisy).setLevel(logging.WARNING)
