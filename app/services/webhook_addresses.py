"""Which webhook receivers mlmarket may send to: absolute https URLs on the public internet.

URLs are checked when a task names them (:func:`checked_url`); the addresses a name resolves to are checked
again at each delivery (:func:`address_allowed`), so that no webhook reaches a private, loopback or link-local
address (unless MLMARKET_WEBHOOK_ALLOW_PRIVATE allows them for local use).
"""

from __future__ import annotations

import ipaddress
import socket

import httpx

from app.core.errors import Unprocessable

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Whether a receiver may be reached at this IP address: only public unicast ones, unless private ones are
    allowed (local use)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        else:
            # 6to4, Teredo and NAT64 addresses lead to the IPv4 address inside them: that one must be allowed too.
            inner = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
            if inner is None and ip in _NAT64:
                inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if inner is not None and not address_allowed(str(inner), allow_private=allow_private):
                return False
    if allow_private:
        return not ip.is_multicast and not ip.is_unspecified
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def _legacy_ipv4(host: str) -> str | None:
    """The address of an IPv4 literal in a form resolvers still accept (``2130706433``, ``0x7f.1``), if it is one."""
    if not host or any(c not in "0123456789abcdefx." for c in host) or not host[0].isdigit():
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _local_name(host: str) -> bool:
    return host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".localdomain"))


def checked_url(url: str, *, allow_private: bool) -> str:
    """The receiver URL if it may be used; 422 naming the problem otherwise. Parsed as the sender parses it;
    names are resolved (and their addresses checked) at each delivery."""
    url = url.strip()
    try:
        parts = httpx.URL(url)
        host = parts.host.rstrip(".").lower()
        port = parts.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise Unprocessable(f"webhook is not a valid URL: {exc}") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise Unprocessable("webhook must be an absolute https URL, such as https://example.com/hooks/mlmarket")
    if parts.scheme == "http" and not allow_private:
        raise Unprocessable("webhook must use https (http is allowed only with MLMARKET_WEBHOOK_ALLOW_PRIVATE)")
    if parts.userinfo:
        raise Unprocessable("webhook must not carry a user name or password; verify the signature instead")
    if port == 0:
        raise Unprocessable("webhook has an invalid port")
    if any(c.isspace() or c in '%<>\\^`{|}"' for c in host):
        raise Unprocessable(f"webhook host {host} is not a valid host name")
    host = _legacy_ipv4(host) or host
    if not allow_private and (_local_name(host) or (_is_ip(host) and not address_allowed(host, allow_private=False))):
        raise Unprocessable(
            f"webhook host {host} is a private, loopback or link-local address; receivers must be on the public "
            "internet (MLMARKET_WEBHOOK_ALLOW_PRIVATE allows others for local use)"
        )
    if _is_ip(host) and not address_allowed(host, allow_private=allow_private):
        raise Unprocessable(f"webhook host {host} is not an address a webhook can be sent to")
    return url
