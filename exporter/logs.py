"""Structured logging: logfmt (default) or JSON lines on stderr.

No line carries a server's raw answer, and every line is bounded: each line of a message or traceback
ends at its first markup (pypsrp logs the whole CLIXML it could not parse, an HTTP error keeps the
server's body: a 20 MB answer was a 20 MB line) and base64 runs are withheld; a library's message keeps
at most ``MAX_LIBRARY_MESSAGE`` characters, the exporter's own ``MAX_MESSAGE``, a traceback ``MAX_TRACEBACK``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

MAX_MESSAGE = 4000
MAX_LIBRARY_MESSAGE = 300
MAX_TRACEBACK = 4000
# An XML or HTML tag (or one cut off at the end of the text); not the exporter's own placeholders.
_MARKUP = re.compile(r"<(?!redacted>|current-user>)[A-Za-z_?!/][^<>\n]{0,300}(?:>|$)")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{120,}={0,2}")


def _withhold(line: str) -> str:
    """One line without what follows its first markup (the rest of a quoted answer) or any base64 run."""
    line = _BASE64.sub(lambda m: f"[{len(m.group())} characters withheld]", line)
    first = _MARKUP.search(line)
    if first is None:
        return line
    return f"{line[: first.start()]}[{len(line) - first.start()} characters withheld: markup, maybe a server's answer]"


def scrub(text: str, limit: int) -> str:
    """``text`` fit for a log line: each line cut at its first markup, at most ``limit`` characters."""
    text = "\n".join(_withhold(line) for line in text.split("\n"))
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text) - limit} more characters withheld]"
    return text


def bounded_message(record: logging.LogRecord) -> str:
    """The record's message as a log line may carry it (see the module doc)."""
    library = record.name.split(".")[0] in LIBRARIES
    return scrub(record.getMessage(), MAX_LIBRARY_MESSAGE if library else MAX_MESSAGE)


def bounded_traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback, each line cut at its first markup, at most ``MAX_TRACEBACK`` characters."""
    assert record.exc_info is not None
    return scrub(formatter.formatException(record.exc_info), MAX_TRACEBACK)


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=exporter.service msg="..."``: one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = bounded_message(record).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            line += ' exc="' + bounded_traceback(self, record).replace("\n", "\\n").replace('"', "'") + '"'
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": bounded_message(record),
        }
        if record.exc_info:
            data["exc"] = bounded_traceback(self, record)
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
