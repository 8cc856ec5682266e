"""TLS of the control-plane API port: which mode a server runs in, and its certificate.

Without a certificate the user brings (``--tls-cert``/``--tls-key``), a CA is generated once in
``<data dir>/tls/`` and signs a server certificate whose SANs are every address and name the server
is told it is reached by. The server certificate is re-issued from the same CA whenever that set
grows or it nears expiry, so clients that trust the CA (``opencs ca export``) keep working.
The certificate file holds the leaf followed by the CA: clients see the CA in the handshake, which
is what ``opencs configure`` pins after the user confirms its fingerprint.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from opencs.pki.ca import CertAuthority, fingerprint, load_cert, verify_chain

TLS_DIR = "tls"
CA_FILE, CA_KEY_FILE = "ca.pem", "ca-key.pem"
SERVER_FILE, SERVER_KEY_FILE = "server.pem", "server-key.pem"
# re-issue the server certificate this long before it expires
RENEW_BEFORE = _dt.timedelta(days=30)
_SIOCGIFADDR = 0x8915


class TlsConfigError(ValueError):
    """The flags ask for something unsafe or inconsistent; the message says what to do."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class TlsMode:
    """What the API port speaks: ``https`` (with the given or a generated cert) or plain ``http``."""

    https: bool
    cert_file: Path | None = None  # a certificate the user brought
    key_file: Path | None = None
    insecure_http: bool = False  # plain HTTP beyond loopback, explicitly asked for

    @property
    def scheme(self) -> str:
        return "https" if self.https else "http"


def decide_mode(host: str, cert_file: Path | None, key_file: Path | None, *, tls: bool = False,
                insecure_http: bool = False) -> TlsMode:
    """Loopback: plain HTTP unless TLS is asked for. Any other address: HTTPS, or plain HTTP
    only with ``insecure_http``."""
    if (cert_file is None) != (key_file is None):
        raise TlsConfigError("give both --tls-cert and --tls-key (or neither, for a generated certificate)")
    if cert_file is not None and insecure_http:
        raise TlsConfigError("--insecure-http contradicts --tls-cert/--tls-key")
    if tls and insecure_http:
        raise TlsConfigError("--insecure-http contradicts --tls")
    if cert_file is not None or tls:
        return TlsMode(https=True, cert_file=cert_file, key_file=key_file)
    if is_loopback(host):
        return TlsMode(https=False)
    if insecure_http:
        return TlsMode(https=False, insecure_http=True)
    return TlsMode(https=True)


# ---------------------------------------------------------------------- addresses


def _ipv4_of(ifname: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:  # no IPv4 address on this interface
            return None
    return socket.inet_ntoa(raw[20:24])


def _ipv6_addresses() -> list[str]:
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[3] == "20":  # scope 0x20: link-local, needs a zone id
            continue
        out.append(str(ipaddress.IPv6Address(bytes.fromhex(parts[0]))))
    return out


def _default_route_interface() -> str | None:
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and parts[1] == "00000000":
            return parts[0]
    return None


def host_addresses() -> list[str]:
    """This host's own IPv4 and (non-link-local) IPv6 addresses, the default route's first."""
    names = [name for _, name in socket.if_nameindex()]
    default = _default_route_interface()
    if default in names:
        names.remove(default)
        names.insert(0, default)
    addrs = [a for a in (_ipv4_of(n) for n in names) if a]
    return list(dict.fromkeys(addrs + _ipv6_addresses()))


def advertised_host(host: str) -> str:
    """The host part of the default public URL: the listen address, or for a wildcard the address
    of the default route (else the first non-loopback address, else 127.0.0.1)."""
    if not is_wildcard(host):
        return host
    for a in host_addresses():
        if not ipaddress.ip_address(a).is_loopback:
            return a
    return "127.0.0.1"


def url_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def wanted_names(host: str, public_urls: list[str], extra: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(IPs, DNS names) the server certificate must cover: the public URLs' hosts, the listen
    address when concrete, every host address for a wildcard listen, and ``extra`` names."""
    names = [url_host(u) for u in public_urls] + list(extra or [])
    names += host_addresses() if is_wildcard(host) else [host]
    ips: list[str] = []
    dns: list[str] = []
    for n in names:
        if not n:
            continue
        try:
            ips.append(str(ipaddress.ip_address(n)))
        except ValueError:
            dns.append(n.lower())
    return list(dict.fromkeys(ips)), list(dict.fromkeys(dns))


def cert_sans(cert_pem: str) -> tuple[list[str], list[str]]:
    """(IPs, DNS names) in a certificate's subjectAltName."""
    try:
        san = load_cert(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return ([str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
            [d.lower() for d in san.get_values_for_type(x509.DNSName)])


# ---------------------------------------------------------------------- files


@dataclass(frozen=True)
class ServerCert:
    """Files uvicorn loads, and the CA clients should trust (None when unknown: a brought cert
    without its chain)."""

    cert_file: Path
    key_file: Path
    ca_pem: str | None
    generated: bool

    @property
    def ca_fingerprint(self) -> str | None:
        return fingerprint(self.ca_pem) if self.ca_pem else None


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def tls_dir(data_dir: Path) -> Path:
    return Path(data_dir) / TLS_DIR


def read_ca(data_dir: Path) -> str | None:
    """The generated CA's PEM, if this data dir has one."""
    try:
        return (tls_dir(data_dir) / CA_FILE).read_text()
    except FileNotFoundError:
        return None


def ensure_ca(data_dir: Path) -> CertAuthority:
    """The data dir's API CA, created on first use (key file mode 0600)."""
    d = tls_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = d / CA_FILE, d / CA_KEY_FILE
    if cert.exists() and key.exists():
        return CertAuthority(cert_pem=cert.read_text(), key_pem=key.read_text())
    ca = CertAuthority.create(f"opencs API CA {socket.gethostname()}")
    _write_private(key, ca.key_pem)
    _write_private(cert, ca.cert_pem, 0o644)
    return ca


def _covers(cert_pem: str, ca: CertAuthority, ips: list[str], dns: list[str]) -> bool:
    if not verify_chain(cert_pem, ca.cert_pem, at=_dt.datetime.now(_dt.UTC) + RENEW_BEFORE):
        return False
    have_ips, have_dns = cert_sans(cert_pem)
    return set(ips) <= set(have_ips) and set(dns) <= set(have_dns)


def ensure_server_cert(data_dir: Path, ips: list[str], dns: list[str]) -> ServerCert:
    """The generated server certificate for these names, issued (again) only when needed."""
    ca = ensure_ca(data_dir)
    d = tls_dir(data_dir)
    cert_file, key_file = d / SERVER_FILE, d / SERVER_KEY_FILE
    try:
        leaf = cert_file.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        current = leaf if key_file.exists() and _covers(leaf, ca, ips, dns) else None
    except (FileNotFoundError, ValueError):
        current = None
    if current is None:
        issued = ca.issue_server(f"opencs API {socket.gethostname()}", ips=ips, dns_names=dns)
        _write_private(key_file, issued.key_pem)
        _write_private(cert_file, issued.cert_pem + ca.cert_pem, 0o644)
    return ServerCert(cert_file=cert_file, key_file=key_file, ca_pem=ca.cert_pem, generated=True)


def load_user_cert(cert_file: Path, key_file: Path) -> ServerCert:
    """Check a certificate the user brought (readable, key matches) before the server binds."""
    try:
        chain_pem = Path(cert_file).read_bytes()
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        chain = x509.load_pem_x509_certificates(chain_pem)
    except (OSError, ValueError, TypeError) as e:
        raise TlsConfigError(f"cannot use --tls-cert {cert_file} / --tls-key {key_file}: {e}") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(serialization.Encoding.PEM, pub) != \
            key.public_key().public_bytes(serialization.Encoding.PEM, pub):
        raise TlsConfigError(f"--tls-key {key_file} is not the key of the certificate in {cert_file}")
    # the last certificate of a chain file that signs itself is the CA to hand out
    last = chain[-1]
    ca = last.public_bytes(serialization.Encoding.PEM).decode() if len(chain) > 1 and \
        last.issuer == last.subject else None
    return ServerCert(cert_file=Path(cert_file), key_file=Path(key_file), ca_pem=ca, generated=False)


def colon_fingerprint(hex_fp: str) -> str:
    """``AB:CD:...`` like ``openssl x509 -fingerprint -sha256``: easy to compare by eye."""
    up = hex_fp.upper()
    return ":".join(up[i:i + 2] for i in range(0, len(up), 2))


def normalize_fingerprint(text: str) -> str:
    t = text.strip().lower()
    for prefix in ("sha256:", "sha256 fingerprint="):
        if t.startswith(prefix):
            t = t[len(prefix):]
    return t.replace(":", "").replace(" ", "")
