"""A probe-only SMTP endpoint on loopback (aiosmtpd), standing in for an organisation's MX hosts.

It greets with ``220 <hostname> ESMTP``, answers EHLO (advertising STARTTLS when it has a certificate and
``starttls`` is on; never AUTH), negotiates TLS, and accepts no mail: ``MAIL FROM`` and ``RCPT TO`` get
``550 5.7.1 probe endpoint``, unless it has a ``sink`` (:class:`MailSink`, e.g. the simulator's
``Simulator.smtp_sink()``): then the sink decides each step like the organisation's receive connector
and takes the accepted mail. Fault knobs: ``banner_delay`` (seconds before the banner) and
``reset_after_banner`` (the connection is closed right after the banner, so the client's EHLO finds it
gone).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from exporter.pki import server_tls_context

__all__ = ["REJECT_REPLY", "DemoSMTP", "MailSink"]

#: The reply to MAIL FROM and RCPT TO.
REJECT_REPLY = "550 5.7.1 probe endpoint"


class MailSink(Protocol):
    """Where accepted mail goes: each method returns None to go on or the SMTP reply that refuses."""

    def connect(self) -> str | None:
        """Before the greeting: None greets, a reply (421 ...) refuses the session."""
        ...

    def mail_from(self, address: str) -> str | None:
        """The sender."""
        ...

    def rcpt_to(self, address: str) -> str | None:
        """One recipient."""
        ...

    def data(self, mail_from: str, recipients: list[str], content: bytes, peer: str) -> str:
        """The message (headers and body as received); the reply to the end of DATA."""
        ...


class _RejectAll:
    """aiosmtpd handler: refuses every sender and recipient, and advertises no AUTH."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        return REJECT_REPLY

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        return REJECT_REPLY


class _ToSink(_RejectAll):
    """aiosmtpd handler: asks the sink at each step and hands it the accepted message."""

    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        refused = await asyncio.to_thread(self.sink.mail_from, address)
        if refused:
            return refused
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refused = await asyncio.to_thread(self.sink.rcpt_to, address)
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        peer = str(session.host_name or "")
        return await asyncio.to_thread(self.sink.data, str(envelope.mail_from), list(envelope.rcpt_tos), content, peer)


class _ProbeSMTP(SMTP):
    def __init__(
        self, handler: Any, *, banner_delay: float, reset_after_banner: bool, sink: MailSink | None, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._banner_delay = banner_delay
        self._reset_after_banner = reset_after_banner
        self._sink = sink

    async def _handle_client(self) -> None:
        if self._banner_delay > 0:
            await asyncio.sleep(self._banner_delay)
        refused = None if self._sink is None else await asyncio.to_thread(self._sink.connect)
        if refused:
            await self.push(refused)
            if self.transport is not None:
                self.transport.close()
            return
        if self._reset_after_banner:
            await self.push(f"220 {self.hostname} {self.__ident__}")
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()


class _Controller(Controller):
    """A Controller serving on an already bound socket (so port 0 works) with the probe SMTP class."""

    def __init__(self, handler: Any, sock: socket.socket, options: dict[str, Any], **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock
        self._options = options

    def factory(self) -> SMTP:
        return _ProbeSMTP(self.handler, **self._options, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class DemoSMTP:
    """SMTP endpoint for probes on ``host``:``port`` (0: any free port); see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "mail1.contoso.sim",
        cert_file: Path | None = None,
        key_file: Path | None = None,
        starttls: bool = True,
        *,
        banner_delay: float = 0.0,
        reset_after_banner: bool = False,
        sink: MailSink | None = None,
    ) -> None:
        if starttls and (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        self.host = host
        self.hostname = hostname
        self.cert_file = cert_file
        self.key_file = key_file
        self.starttls = starttls and cert_file is not None
        self.banner_delay = banner_delay
        self.reset_after_banner = reset_after_banner
        self.sink = sink
        self._requested_port = port
        self._port = 0
        self._controller: _Controller | None = None

    @property
    def port(self) -> int:
        """The port listened on, known once started."""
        return self._port

    @property
    def address(self) -> str:
        """The address listened on."""
        return self.host

    @property
    def banner(self) -> str:
        """The greeting line (without CRLF)."""
        return f"220 {self.hostname} ESMTP"

    def tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context used for STARTTLS, or None when STARTTLS is off."""
        if not self.starttls or self.cert_file is None or self.key_file is None:
            return None
        return server_tls_context(self.cert_file, self.key_file)

    def start(self) -> DemoSMTP:
        """Bind and start serving in a background thread (aiosmtpd's event loop)."""
        if self._controller is not None:
            raise RuntimeError("DemoSMTP already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        controller = _Controller(
            _RejectAll() if self.sink is None else _ToSink(self.sink),
            sock,
            {"banner_delay": self.banner_delay, "reset_after_banner": self.reset_after_banner, "sink": self.sink},
            server_hostname=self.hostname,
            ident="ESMTP",
            tls_context=self.tls_context(),
            require_starttls=False,
            enable_SMTPUTF8=False,
            timeout=30,
            ready_timeout=10.0,
        )
        try:
            controller.start()
        except BaseException:
            sock.close()
            raise
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop serving; idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> DemoSMTP:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
