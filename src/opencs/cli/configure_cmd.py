"""`opencs configure` (endpoint, credentials, and the CA an https endpoint is verified against)
and `opencs ca export` (the data dir's API CA, for clients to trust)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from opencs.cli import profile as profiles
from opencs.cli.output import EXIT_CONNECTION, cli_errors, err
from opencs.cli.server_cmd import DATA_DIR_OPT
from opencs.pki.ca import fingerprint, load_cert
from opencs.pki.server_tls import colon_fingerprint, normalize_fingerprint, read_ca
from opencs.sdk.core import tls_context

ca_app = typer.Typer(help="The API's certificate authority.", no_args_is_help=True)


# ---------------------------------------------------------------------- TLS probing


def _address(endpoint: str) -> tuple[str, int]:
    u = urlsplit(endpoint)
    return u.hostname or "", u.port or 443


def _handshake(endpoint: str, ctx: ssl.SSLContext, timeout: float = 10.0) -> list[str]:
    """TLS handshake with the endpoint; the PEM chain the server sent, leaf first."""
    host, port = _address(endpoint)
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        # SSLSocket.get_unverified_chain is public from Python 3.13 (DER bytes); before, only the
        # C object has it (certificate objects)
        sslobj = getattr(tls, "_sslobj", None)
        getter = getattr(sslobj, "get_unverified_chain", None) or getattr(tls, "get_unverified_chain")  # noqa: B009
        pem = ssl._ssl.ENCODING_PEM  # type: ignore[attr-defined]
        return [ssl.DER_cert_to_PEM_cert(c) if isinstance(c, bytes) else c.public_bytes(pem) for c in getter() or []]


def fetch_chain(endpoint: str) -> list[str]:
    """The certificates an https endpoint presents, without trusting them (to be pinned only after
    the user confirmed the fingerprint)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return _handshake(endpoint, ctx)


def verify_endpoint(endpoint: str, ca_file: str | None) -> str | None:
    """None if the endpoint's certificate verifies (chain and host name), else the reason."""
    try:
        _handshake(endpoint, tls_context(ca_file))
    except ssl.SSLCertVerificationError as e:
        return e.verify_message or str(e)
    return None


def _pin_ca(endpoint: str, name: str, expected: str | None, yes: bool) -> str:
    """Fetch the endpoint's CA, have its fingerprint confirmed, store it; the file's path."""
    try:
        if verify_endpoint(endpoint, None) is None:
            typer.echo(f"{endpoint}: certificate verified by the system trust store")
            return ""
        chain = fetch_chain(endpoint)
    except (OSError, ssl.SSLError) as e:
        err(f"Error: cannot reach {endpoint} to fetch its CA: {e}; give --ca-file instead")
        raise typer.Exit(EXIT_CONNECTION) from None
    ca_pem = chain[-1]
    fp = fingerprint(ca_pem)
    typer.echo(f"{endpoint} presents a certificate issued by: {load_cert(ca_pem).subject.rfc4514_string()}")
    typer.echo(f"  CA SHA-256 fingerprint: {colon_fingerprint(fp)}")
    typer.echo("  (compare with `opencs ca export --fingerprint` on the server, or its start-up log)")
    if expected is not None:
        if normalize_fingerprint(expected) != fp:
            err("Error: the CA's fingerprint is not the one given with --ca-fingerprint; nothing saved")
            raise typer.Exit(1)
    elif not yes and not typer.confirm("Trust this CA for this endpoint?", default=False):
        err("Not trusted; nothing saved.")
        raise typer.Exit(1)
    path = profiles.pinned_ca_path(name)
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    path.write_text(ca_pem)
    reason = verify_endpoint(endpoint, str(path))
    if reason:
        err(f"Error: {endpoint} does not verify even with that CA ({reason}); "
            "is the host name one of its certificate's names?")
        raise typer.Exit(1)
    typer.echo(f"Pinned the CA in {path}")
    return str(path)


# ---------------------------------------------------------------------- configure


def configure(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Profile to write.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="API endpoint, e.g. http://127.0.0.1:8990.")] = None,
    access_key_id: Annotated[str | None, typer.Option(help="AccessKey ID.")] = None,
    access_key_secret: Annotated[str | None, typer.Option(help="AccessKey secret.")] = None,
    scheme: Annotated[str | None, typer.Option(help="Signature scheme: roa or acs3.")] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA to verify an https endpoint "
                                                 "against (else it is fetched and pinned).")] = None,
    ca_fingerprint: Annotated[str | None, typer.Option(
        "--ca-fingerprint", help="Pin the fetched CA without asking if its SHA-256 fingerprint is this.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Pin the fetched CA without asking.")] = False,
) -> None:
    """Save endpoint and credentials to ~/.opencs/config.json (like `aliyun configure`). For an
    https endpoint the server's CA is fetched and pinned once you confirm its fingerprint."""
    explicit = profile or (ctx.obj or {}).get("profile")
    with cli_errors():
        data = profiles.load_config()
    name = profiles.selected_name(explicit, data)
    prof = profiles.stored_profile(name, data)

    interactive = endpoint is None or access_key_id is None or access_key_secret is None
    if endpoint is None:
        endpoint = typer.prompt("Endpoint", default=prof.endpoint or "http://127.0.0.1:8990")
    if access_key_id is None:
        access_key_id = typer.prompt("AccessKey ID", default=prof.access_key_id or None)
    if access_key_secret is None:
        shown = profiles.mask_secret(prof.access_key_secret)
        answer = typer.prompt(
            f"AccessKey Secret{f' [{shown}]' if shown else ''}", default="", hide_input=True,
            show_default=False,
        )
        access_key_secret = answer or prof.access_key_secret
    if scheme is None:
        scheme = prof.scheme or "roa"
        if interactive:
            scheme = typer.prompt("Signature scheme (roa or acs3)", default=scheme)
    scheme = scheme.strip().lower()
    if scheme not in profiles.SCHEMES:
        raise typer.BadParameter("expected roa or acs3", param_hint="--scheme")
    endpoint = endpoint.strip().rstrip("/")
    if endpoint and "://" not in endpoint:
        endpoint = "http://" + endpoint
    if not endpoint or not access_key_id or not access_key_secret:
        raise typer.BadParameter("endpoint, AccessKey ID and secret are all required")

    ca = ""
    if ca_file is not None:
        if not ca_file.is_file():
            raise typer.BadParameter(f"{ca_file} is not a file", param_hint="--ca-file")
        ca = str(ca_file.resolve())
    elif endpoint.lower().startswith("https://"):
        ca = _pin_ca(endpoint, name, ca_fingerprint, yes)
    new = profiles.Profile(name=name, endpoint=endpoint, access_key_id=access_key_id.strip(),
                           access_key_secret=access_key_secret.strip(), scheme=scheme, ca_file=ca)
    try:
        path = profiles.save_profile(new)
    except OSError as e:
        err(f"Error: cannot write the configuration: {e}")
        raise typer.Exit(1) from None
    typer.echo(f"Saved profile '{name}' to {path}")
    typer.echo(f"  endpoint:          {new.endpoint}")
    typer.echo(f"  access key id:     {new.access_key_id}")
    typer.echo(f"  access key secret: {profiles.mask_secret(new.access_key_secret)}")
    typer.echo(f"  scheme:            {new.scheme}")
    if new.ca_file:
        typer.echo(f"  ca file:           {new.ca_file}")


# ---------------------------------------------------------------------- ca export


@ca_app.command("export")
def ca_export(
    data_dir: Path = DATA_DIR_OPT,
    show_fingerprint: Annotated[bool, typer.Option("--fingerprint", help="Print its SHA-256 fingerprint "
                                                   "instead of the PEM.")] = False,
) -> None:
    """Print the CA that signs the API's generated certificate (PEM), for clients to trust."""
    pem = read_ca(data_dir)
    if pem is None:
        err(f"Error: {data_dir.resolve()} has no generated API CA: start `opencs server` with HTTPS once "
            "(a server started with --tls-cert uses the CA that issued that certificate)")
        raise typer.Exit(1)
    typer.echo(colon_fingerprint(fingerprint(pem)) if show_fingerprint else pem.rstrip("\n"))


def register(app: typer.Typer) -> None:
    app.command("configure")(configure)
    app.add_typer(ca_app, name="ca")
