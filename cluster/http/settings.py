"""What the HTTP API is started with (``http.*`` in the Hydra config of ``tessera serve``)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from cluster.errors import SpecError


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = True
    """Start the HTTP API with `tessera serve`."""
    host: str = "127.0.0.1"
    """Address the API binds; anything but a loopback address needs a token (`tessera token create`)."""
    port: int = 8000
    """TCP port of the API."""
    output_root: str = "outputs"
    """Absolute folder a submission's output_dir is taken under (absent or relative); the service's first
    output root."""

    @property
    def local(self) -> bool:
        """The bind is reachable from this machine only: the API may stay open while no token exists."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost may resolve anywhere
        return False


def check_bind(settings: HttpSettings, tokens_exist: bool) -> None:
    """Refuse to serve an open API beyond this machine: a non-loopback bind needs a token first."""
    if not settings.local and not tokens_exist:
        raise SpecError(
            "http.host",
            f"{settings.host!r} is not a loopback address and no token exists, so anyone who reaches it could "
            "submit and cancel jobs; create one first (`tessera token create TENANT`) or bind 127.0.0.1",
        )
    if not isinstance(settings.port, int) or isinstance(settings.port, bool) or not 0 < settings.port < 65536:
        raise SpecError("http.port", f"expected a TCP port in 1..65535, got {settings.port!r}")


def check_port_free(settings: HttpSettings) -> None:
    """Refuse a port another process listens on before anything starts (Serve's proxy would retry forever)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as err:
            raise SpecError("http.port", f"cannot listen on {settings.host}:{settings.port}: {err.strerror}") from None
