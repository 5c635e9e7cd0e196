"""A local SMTP server (aiosmtpd) standing for the outside world's mail server.

`SmtpReceiver()` listens on a free loopback port in a thread of its own and keeps each message
it accepts (`messages`: email.message.EmailMessage objects, headers decoded, with the envelope's recipients in
`rcpt_tos`). Recipients in `refuse` are answered 550; `silent=True` gives a server that accepts
the connection and never answers (an EMAIL_TIMEOUT test). `settings_for()` gives the Django
settings, and `url` the EMAIL_URL, that send to it.
"""

import contextlib
import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


@dataclass
class Received:
    rcpt_tos: list[str]
    message: email.message.Message


@dataclass
class _Handler:
    refuse: set[str] = field(default_factory=set)
    messages: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.arrived:
            self.messages.append(
                Received(
                    list(envelope.rcpt_tos),
                    email.message_from_bytes(envelope.content, policy=email.policy.default),
                )
            )
            self.arrived.notify_all()
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpReceiver:
    def __init__(self, refuse=(), silent: bool = False):
        self.handler = _Handler(refuse=set(refuse))
        self.port = _free_port()
        self._silent = None
        if silent:
            self._silent = socket.socket()
            self._silent.bind(("127.0.0.1", self.port))
            self._silent.listen(8)  # accepted by the kernel, never answered
            self.controller = None
        else:
            self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
            self.controller.start()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def settings_for(self, settings) -> None:
        """Point Django's `settings` (pytest-django's fixture) at this server."""
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", self.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        """The messages once `count` have arrived (a generous limit, not an assertion)."""
        with self.handler.arrived:
            self.handler.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)

    def close(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        if self._silent is not None:
            with contextlib.suppress(OSError):
                self._silent.close()
