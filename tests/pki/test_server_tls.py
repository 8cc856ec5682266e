"""TLS mode, the generated API certificate and the plain-HTTP refusal of secret-carrying replies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opencs.api.secure_transport import carries_secret, refusal
from opencs.config import Settings
from opencs.pki import CertAuthority, verify_chain
from opencs.pki import server_tls as st


def test_mode_loopback_http_elsewhere_https() -> None:
    assert not st.decide_mode("127.0.0.1", None, None).https
    assert not st.decide_mode("localhost", None, None).https
    assert not st.decide_mode("::1", None, None).https
    assert st.decide_mode("127.0.0.1", None, None, tls=True).https
    for host in ("0.0.0.0", "::", "10.1.2.3", "opencs.example"):
        assert st.decide_mode(host, None, None).https, host
        insecure = st.decide_mode(host, None, None, insecure_http=True)
        assert not insecure.https and insecure.insecure_http and insecure.scheme == "http"
    mode = st.decide_mode("127.0.0.1", Path("c.pem"), Path("k.pem"))
    assert mode.https and mode.cert_file == Path("c.pem")


@pytest.mark.parametrize("kw", [dict(cert_file=Path("c"), key_file=None),
                                dict(cert_file=Path("c"), key_file=Path("k"), insecure_http=True),
                                dict(cert_file=None, key_file=None, tls=True, insecure_http=True)])
def test_mode_contradictions(kw: dict) -> None:
    with pytest.raises(st.TlsConfigError):
        st.decide_mode("0.0.0.0", kw.pop("cert_file"), kw.pop("key_file"), **kw)


def test_public_url_follows_scheme_and_host() -> None:
    assert Settings(data_dir=Path("d"), host="10.9.8.7", port=443, tls=True).public_url == "https://10.9.8.7:443"
    assert Settings(data_dir=Path("d"), port=8990).public_url == "http://127.0.0.1:8990"
    wild = Settings(data_dir=Path("d"), host="0.0.0.0", port=1, tls=True).public_url
    assert wild.startswith("https://") and "0.0.0.0" not in wild
    assert Settings(data_dir=Path("d"), public_url="https://api.example:9/").public_url == "https://api.example:9"


def test_master_url_follows_the_public_host() -> None:
    from opencs.cli.server_cmd import advertise_endpoints

    far = Settings(data_dir=Path("d"), host="0.0.0.0", port=1, tls=True, public_url="https://cs.example:1")
    advertise_endpoints(far)
    assert (far.appapi_host, far.appapi_advertise_host) == ("0.0.0.0", "cs.example")
    near = Settings(data_dir=Path("d"))
    advertise_endpoints(near)
    assert (near.appapi_host, near.appapi_advertise_host) == ("127.0.0.1", "")


def test_wanted_names() -> None:
    ips, dns = st.wanted_names("10.1.2.3", ["https://Api.Example:8990"], ["lb.example", "192.0.2.9"])
    assert ips == ["192.0.2.9", "10.1.2.3"] and dns == ["api.example", "lb.example"]
    ips, _ = st.wanted_names("0.0.0.0", ["https://127.0.0.1:1"])
    assert set(st.host_addresses()) <= set(ips) and "127.0.0.1" in ips


def test_generated_cert_once_and_reissued_for_new_names(tmp_path: Path) -> None:
    first = st.ensure_server_cert(tmp_path, ["10.1.2.3"], ["api.example"])
    assert oct(os.stat(first.cert_file.parent / st.CA_KEY_FILE).st_mode & 0o777) == "0o600"
    assert oct(os.stat(first.key_file).st_mode & 0o777) == "0o600"
    leaf_pem = first.cert_file.read_text()
    assert leaf_pem.count("BEGIN CERTIFICATE") == 2  # leaf, then the CA clients are told to trust
    assert verify_chain(leaf_pem, first.ca_pem or "")
    ips, dns = st.cert_sans(leaf_pem)
    assert {"10.1.2.3", "127.0.0.1"} <= set(ips) and {"api.example", "localhost"} <= set(dns)
    again = st.ensure_server_cert(tmp_path, ["10.1.2.3"], [])
    assert again.cert_file.read_text() == leaf_pem  # covered: not re-issued
    more = st.ensure_server_cert(tmp_path, ["10.1.2.4"], [])
    assert more.cert_file.read_text() != leaf_pem and more.ca_pem == first.ca_pem  # same CA
    assert "10.1.2.4" in st.cert_sans(more.cert_file.read_text())[0]
    assert st.read_ca(tmp_path) == first.ca_pem and st.read_ca(tmp_path / "none") is None


def test_user_cert_checked(tmp_path: Path) -> None:
    ca = CertAuthority.create("user ca")
    leaf = ca.issue_server("api", ips=["10.0.0.1"])
    other = ca.issue_server("other")
    (tmp_path / "chain.pem").write_text(leaf.cert_pem + ca.cert_pem)
    (tmp_path / "key.pem").write_text(leaf.key_pem)
    (tmp_path / "wrong.pem").write_text(other.key_pem)
    got = st.load_user_cert(tmp_path / "chain.pem", tmp_path / "key.pem")
    assert got.ca_pem and got.ca_fingerprint == ca.fingerprint and not got.generated
    with pytest.raises(st.TlsConfigError, match="not the key"):
        st.load_user_cert(tmp_path / "chain.pem", tmp_path / "wrong.pem")
    with pytest.raises(st.TlsConfigError, match="cannot use"):
        st.load_user_cert(tmp_path / "missing.pem", tmp_path / "key.pem")


def test_fingerprint_forms() -> None:
    assert st.colon_fingerprint("ab01") == "AB:01"
    assert st.normalize_fingerprint("SHA256 Fingerprint=AB:01") == "ab01"
    assert st.normalize_fingerprint("sha256:AB01") == "ab01"


@pytest.mark.parametrize(("method", "path", "secret"), [
    ("GET", "/clusters/c1/certs", True), ("GET", "/clusters/c1", False),
    ("POST", "/clusters/c1/triggers", True), ("GET", "/clusters/c1/triggers", False),
    ("POST", "/clusters/c1/triggers/t1/rotate", True), ("DELETE", "/clusters/c1/triggers/t1", False),
    ("GET", "/k8s/c1/user_config", True), ("GET", "/clusters", False),
])
def test_secret_routes(method: str, path: str, secret: bool) -> None:
    assert carries_secret(method, path, [], b"") is secret


def test_ram_create_access_key_is_secret() -> None:
    assert carries_secret("POST", "/", [(b"x-acs-action", b"CreateAccessKey")], b"")
    assert carries_secret("POST", "/", [], b"Action=CreateAccessKey&UserName=u")
    assert not carries_secret("POST", "/", [], b"Action=ListUsers")


def _scope(scheme: str, client: tuple[str, int] | None) -> dict:
    return {"type": "http", "scheme": scheme, "client": client, "method": "GET", "path": "/clusters/c1/certs",
            "headers": [], "query_string": b""}


def test_refusal_only_plain_http_beyond_loopback() -> None:
    assert refusal(_scope("http", ("10.0.0.2", 5555))) is not None
    assert refusal(_scope("http", ("::ffff:10.0.0.2", 5555))) is not None
    assert refusal(_scope("https", ("10.0.0.2", 5555))) is None
    for local in (("127.0.0.1", 1), ("::1", 1), ("::ffff:127.0.0.1", 1), ("testclient", 1), None):
        assert refusal(_scope("http", local)) is None, local


def test_configure_fetches_the_ca_from_the_handshake(tmp_path: Path) -> None:
    import socket
    import ssl
    import threading

    from opencs.cli.configure_cmd import fetch_chain, verify_endpoint

    served = st.ensure_server_cert(tmp_path, ["127.0.0.1"], [])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(served.cert_file, served.key_file)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        url = f"https://127.0.0.1:{srv.getsockname()[1]}"

        def serve() -> None:
            for _ in range(3):
                conn, _ = srv.accept()
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                except (OSError, ssl.SSLError):
                    pass  # the untrusting client hangs up in the handshake

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        chain = fetch_chain(url)
        assert len(chain) == 2 and chain[-1] == served.ca_pem
        (tmp_path / "pin.pem").write_text(chain[-1])
        assert verify_endpoint(url, str(tmp_path / "pin.pem")) is None
        assert "self-signed" in (verify_endpoint(url, None) or "")
        t.join(10)
