"""Addresses and names no sandbox may reach by default: cloud metadata endpoints, private ranges.

`metadata_endpoint(host)` names the cloud metadata service a host is (by name or by address, in
any spelling an IPv4 parser accepts: `169.254.169.254`, `2852039166`, `0xa9fea9fe`,
`::ffff:169.254.169.254`, `64:ff9b::a9fe:a9fe`). `local_reason(host)` says why a host is on the
local side (a private, loopback, link-local, shared or otherwise non-global address, or a name
such as `localhost`, `*.internal`, `*.local` or a single label resolved through search domains).
`blocked_address(addr)` is the same check for an address a name resolved to.

`public_suffix(domain)` tells whether `*.domain` would match everybody's hosts under a public
suffix. It is a small built-in list, not the full Public Suffix List: every single label (`com`,
`dev`, any new gTLD), `<generic>.<cc>` second levels (`co.uk`, `com.au`, `ne.jp`, `gob.mx`...)
and common shared-hosting suffixes (`github.io`, `herokuapp.com`, `pages.dev`...).
"""

from __future__ import annotations

import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata and host-agent endpoints: credentials of the machine's cloud identity live here.
METADATA_ADDRESSES: dict[str, str] = {
    "169.254.169.254": "AWS/GCP/Azure/OCI/DigitalOcean/OpenStack instance metadata",
    "169.254.170.2": "AWS ECS task metadata and credentials",
    "169.254.170.23": "AWS EKS pod identity agent",
    "169.254.0.23": "Tencent Cloud metadata",
    "fd00:ec2::254": "AWS instance metadata (IPv6)",
    "fd00:ec2::23": "AWS EKS pod identity agent (IPv6)",
    "fd20:ce::254": "GCP metadata (IPv6)",
    "100.100.100.200": "Alibaba Cloud metadata",
    "168.63.129.16": "Azure WireServer / host agent",
    "192.0.0.192": "Oracle Cloud legacy metadata",
}
METADATA_NAMES: dict[str, str] = {
    "metadata": "GCP metadata (through the search domain)",
    "metadata.google.internal": "GCP metadata",
    "metadata.goog": "GCP metadata",
    "instance-data": "AWS instance metadata (through the search domain)",
    "instance-data.ec2.internal": "AWS instance metadata",
    "metadata.tencentyun.com": "Tencent Cloud metadata",
    "metadata.platformequinix.com": "Equinix Metal metadata",
    "metadata.packet.net": "Equinix Metal (Packet) metadata",
}
LOCAL_NAME_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain", ".lan", ".intranet",
                       ".corp", ".private")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT; Python does not call it private
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def normalise_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.split("%", 1)[0] if ":" in host else host  # drop an IPv6 zone id


def parse_ip(host: str) -> IPAddress | None:
    """The address a host string denotes, in any form glibc's parser accepts (decimal, hex, octal)."""
    host = normalise_host(host)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and re.fullmatch(r"[0-9a-fx.]+", host) and re.match(r"[0-9]", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64) or int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def metadata_endpoint(host: str) -> str | None:
    """What metadata service `host` is, or None."""
    name = normalise_host(host)
    if name in METADATA_NAMES:
        return METADATA_NAMES[name]
    ip = parse_ip(name)
    if ip is None:
        return None
    for candidate in (ip, embedded_ipv4(ip)):
        if candidate is not None and str(candidate) in METADATA_ADDRESSES:
            return METADATA_ADDRESSES[str(candidate)]
    return None


def _address_reason(ip: IPAddress) -> str | None:
    # an IPv6 address carrying an IPv4 one (mapped, 6to4, NAT64) goes where the IPv4 one does
    embedded = embedded_ipv4(ip) if not ip.is_loopback and not ip.is_unspecified else None
    a: IPAddress = embedded if embedded is not None else ip
    if a.is_loopback:
        return "a loopback address"
    if a.is_link_local:
        return "a link-local address"
    if a in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if a.is_unspecified:
        return "the unspecified address"
    if a.is_multicast:
        return "a multicast address"
    if a.is_private:
        return "a private address"
    if not a.is_global or a.is_reserved:
        return "a reserved, non-global address"
    return None


def blocked_address(addr: str) -> str | None:
    """Why an address (e.g. what a name resolved to) must not be reached, or None."""
    ip = parse_ip(addr)
    if ip is None:
        return None
    meta = metadata_endpoint(addr)
    if meta:
        return f"a cloud metadata endpoint ({meta})"
    return _address_reason(ip)


def local_reason(host: str) -> str | None:
    """Why `host` (an address or a name) is on the local side, or None for a public host."""
    name = normalise_host(host)
    ip = parse_ip(name)
    if ip is not None:
        return _address_reason(ip)
    if name == "localhost" or name.endswith(LOCAL_NAME_SUFFIXES):
        return "a local name"
    if name and "." not in name:
        return "a single-label name (resolved through local search domains)"
    return None


# -- public suffixes -------------------------------------------------------------------------
_GENERIC_SECOND_LEVEL = {"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gob", "mil", "nom",
                         "ltd", "plc", "sch", "gen", "biz", "info", "int", "res", "firm", "web", "ind", "nic",
                         "gv", "lg", "ed", "gr", "ad", "govt", "school", "kiwi", "me", "id", "in"}
SHARED_HOSTING_SUFFIXES = {
    "github.io", "githubusercontent.com", "gitlab.io", "bitbucket.io", "herokuapp.com", "herokudns.com",
    "vercel.app", "now.sh", "netlify.app", "netlify.com", "pages.dev", "workers.dev", "r2.dev",
    "trycloudflare.com", "appspot.com", "web.app", "firebaseapp.com", "cloudfunctions.net", "run.app",
    "blogspot.com", "wordpress.com", "azurewebsites.net", "cloudapp.net", "azurestaticapps.net",
    "blob.core.windows.net", "cloudfront.net", "s3.amazonaws.com", "elasticbeanstalk.com", "amplifyapp.com",
    "ngrok.io", "ngrok-free.app", "ngrok.app", "fly.dev", "onrender.com", "railway.app", "glitch.me",
    "repl.co", "replit.dev", "deno.dev", "surge.sh", "readthedocs.io", "pythonanywhere.com", "duckdns.org",
    "no-ip.org", "ddns.net", "dyndns.org", "hf.space", "streamlit.app", "codesandbox.io", "csb.app",
    "gitpod.io", "ghost.io", "myshopify.com", "wixsite.com", "weebly.com", "carrd.co", "neocities.org",
}


def public_suffix(domain: str) -> bool:
    """True when `domain` is (as far as this small list knows) a public suffix anyone registers under."""
    d = normalise_host(domain)
    labels = d.split(".")
    if len(labels) == 1:
        return True
    if d in SHARED_HOSTING_SUFFIXES:
        return True
    return len(labels) == 2 and len(labels[1]) == 2 and labels[0] in _GENERIC_SECOND_LEVEL
