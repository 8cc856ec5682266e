"""`opencs server` (embedded default: API + task workers in one process) and `opencs worker`."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from opencs.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from opencs.composition import ControlPlane
    from opencs.pki.server_tls import ServerCert, TlsMode

log = logging.getLogger("opencs")

DATA_DIR_OPT = typer.Option(Path(os.environ.get("OPENCS_DATA_DIR", "./opencs-data")), "--data-dir",
                            help="State directory (SQLite database, keys, node state).")
DB_OPT = typer.Option(os.environ.get("OPENCS_DATABASE_URL"), "--database-url",
                      help="postgresql://user:pass@host/db to share state between processes (default: SQLite).")


# seconds an idle client connection stays open (nginx, AWS ALB: 60-75 s): longer than clients keep
# idle connections (httpx 5 s, uvicorn's default too: with equal timeouts a reused connection raced
# the server's close and the request failed with "Server disconnected" in a PostgreSQL load run)
KEEP_ALIVE_S = 75


def _logging(level: str, fmt: str = "text") -> None:
    from opencs import logfmt

    try:
        logfmt.setup(level, fmt)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--log-format") from None


def bootstrap_credentials(rt: object) -> None:
    """OPENCS_BOOTSTRAP_ACCESS_KEY_ID/SECRET: ensure that admin key (idempotent). Otherwise, on
    the very first start, create one and write it to a 0600 file; log the path, never the secret."""
    from opencs.composition import ControlPlane

    assert isinstance(rt, ControlPlane)
    ak = os.environ.get("OPENCS_BOOTSTRAP_ACCESS_KEY_ID", "")
    secret = os.environ.get("OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET", "")
    if ak or secret:
        if not (ak and secret):
            raise typer.BadParameter("set both OPENCS_BOOTSTRAP_ACCESS_KEY_ID and OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET")
        changed = rt.keys.ensure(ak, secret)
        log.info("bootstrap AccessKey %s %s", ak, "created/updated" if changed else "present")
        return
    if rt.keys.count() == 0:
        ak, secret = rt.keys.create("first admin key", admin=True)
        path = rt.settings.data_dir / "admin-credentials.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"access_key_id": ak, "access_key_secret": secret}, f)
        log.warning("created the first admin AccessKey %s; its secret is in %s (mode 0600)", ak, path)


def _public_url_error(public_url: str, https: bool) -> str | None:
    if public_url and https and public_url.lower().startswith("http://"):
        return (f"--public-url {public_url} says http but the API serves HTTPS; "
                "give the https:// URL clients use")
    return None


def advertise_endpoints(settings: Settings) -> None:
    """Beyond loopback, the clusters' endpoints (master_url) listen where the API does and are
    advertised under the public URL's host; on loopback they stay on 127.0.0.1."""
    from opencs.pki import server_tls as st

    if not st.is_loopback(settings.host):
        settings.appapi_host = settings.host
        settings.appapi_advertise_host = st.url_host(settings.public_url)


def tls_setup(settings: Settings, mode: TlsMode, extra_names: list[str]) -> ServerCert | None:
    """The certificate the API port serves (None for plain HTTP): the user's, or the data dir's
    generated one covering every name the server is reached by. Logs what clients must trust."""
    from opencs.pki import server_tls as st

    if not mode.https:
        if mode.insecure_http:
            log.warning("--insecure-http: the API on %s is plain HTTP beyond loopback; requests and replies "
                        "cross the network in clear text (replies carrying secrets are refused to "
                        "non-loopback peers). Serve HTTPS instead: drop --insecure-http.", settings.host)
        return None
    if mode.cert_file and mode.key_file:
        cert = st.load_user_cert(mode.cert_file, mode.key_file)
    else:
        ips, dns = st.wanted_names(settings.host, [settings.public_url], extra_names)
        cert = st.ensure_server_cert(settings.data_dir, ips, dns)
        log.info("API certificate %s for %s", cert.cert_file, ", ".join(dns + ips))
    if cert.ca_fingerprint:
        log.info("API CA SHA-256 fingerprint %s (clients trust it: `opencs ca export --data-dir %s`)",
                 st.colon_fingerprint(cert.ca_fingerprint), settings.data_dir)
    return cert


def with_console(app: FastAPI, rt: ControlPlane) -> FastAPI:
    """The control-plane app with the web console mounted at /console (it calls the app in-process)."""
    from opencs.console.app import PATH, mount

    mount(app, rt)
    log.info("opencs console at %s%s/ (sign in with an AccessKey pair)", rt.settings.public_url.rstrip("/"), PATH)
    return app


def build_or_exit(settings: Settings) -> ControlPlane:
    """The control plane; a collision with another data dir's host claims is a usage error (exit 2)."""
    from opencs.composition import build
    from opencs.providers.hostclaims import ClaimConflict

    try:
        return build(settings)
    except ClaimConflict as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    @app.command()
    def server(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8990, "--port", help="Port to listen on."),
        data_dir: Path = DATA_DIR_OPT,
        database_url: str | None = DB_OPT,
        workers: int = typer.Option(2, "--workers", help="Task worker threads in this process (0: API only)."),
        log_level: str = typer.Option("info", "--log-level"),
        log_format: str = typer.Option("text", "--log-format", help="text, or json with the RequestId."),
        public_url: str = typer.Option("", "--public-url", envvar="OPENCS_PUBLIC_URL",
                                       help="URL clients reach this API by (trigger URLs; a SAN of the "
                                            "generated certificate). Default: <scheme>://<host>:<port>."),
        tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate (chain) to serve."),
        tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
        tls: bool = typer.Option(False, "--tls", help="HTTPS on loopback too (a generated certificate)."),
        tls_san: list[str] = typer.Option([], "--tls-san",
                                          help="Another name or address for the generated certificate."),
        insecure_http: bool = typer.Option(False, "--insecure-http",
                                           help="Plain HTTP on a non-loopback address (not recommended)."),
    ) -> None:
        """Run the control plane in the foreground (API + durable-task workers). SIGTERM stops it cleanly.

        On loopback the API is plain HTTP unless --tls/--tls-cert; on any other address it is HTTPS
        (a certificate generated in the data dir unless --tls-cert/--tls-key) and plain HTTP needs
        --insecure-http."""
        import uvicorn

        from opencs.api.app import create_app
        from opencs.pki import server_tls as st

        _logging(log_level, log_format)
        try:
            mode = st.decide_mode(host, tls_cert, tls_key, tls=tls, insecure_http=insecure_http)
            problem = _public_url_error(public_url, mode.https)
            if problem:
                raise st.TlsConfigError(problem)
            settings = Settings(data_dir=data_dir, database_url=database_url, host=host, port=port,
                                workers=workers, tls=mode.https, public_url=public_url)
            advertise_endpoints(settings)
            cert = tls_setup(settings, mode, tls_san)
        except st.TlsConfigError as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(2) from None
        rt = build_or_exit(settings)
        bootstrap_credentials(rt)
        rt.start()
        # uvicorn has no HTTP/2 (h11/httptools only): the API speaks HTTP/1.1 with keep-alive
        log.info("opencs API at %s (listening on %s://%s:%d, data %s)", settings.public_url, mode.scheme,
                 host, port, settings.data_dir)
        # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal to the handler that
        # was there before it: make that handler a clean exit so that rt.close() below still runs
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sys.exit(0))
        try:
            uvicorn.run(with_console(create_app(rt), rt), host=host, port=port, log_level=log_level, access_log=False,
                        log_config=None, timeout_graceful_shutdown=10,  # log_config: our handler and format
                        timeout_keep_alive=KEEP_ALIVE_S,
                        ssl_certfile=cert.cert_file if cert else None, ssl_keyfile=cert.key_file if cert else None)
        finally:
            rt.close()
            log.info("opencs stopped")

    @app.command()
    def doctor(
        data_dir: Path = DATA_DIR_OPT,
        database_url: str | None = DB_OPT,
    ) -> None:
        """Check what this machine offers opencs: store, node providers, registry, router."""
        import shutil

        from opencs.composition import build
        from opencs.providers.base import ProviderUnavailable

        ok = True

        def line(good: bool, what: str, detail: str = "") -> None:
            nonlocal ok
            ok = ok and good
            typer.echo(f"[{'ok' if good else 'FAIL'}] {what}" + (f": {detail}" if detail else ""))

        settings = Settings(data_dir=data_dir, database_url=database_url, workers=0)
        try:
            rt = build(settings)
        except Exception as e:  # report, do not crash: this command is for broken machines
            line(False, "store", str(e).splitlines()[0])
            raise typer.Exit(1) from None
        line(True, "store", settings.resolved_database_url.split("@")[-1])
        for name, prov in rt.providers.items():
            try:
                prov.check()
                line(True, f"node provider {name}")
            except ProviderUnavailable as e:
                line(False, f"node provider {name}", str(e))
        rt.close()
        for binary, why in (("docker-registry", "bundled image registry (apt-get install docker-registry)"),
                            ("busybox", "the seeded busybox image (apt-get install busybox-static)"),
                            ("haproxy", "routing (apt-get install haproxy)")):
            path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/bin")
            line(path is not None, why, path or "missing")
        _doctor_kubernetes(settings.kubernetes_oci_runtime)
        raise typer.Exit(0 if ok else 1)

    @app.command()
    def worker(
        data_dir: Path = DATA_DIR_OPT,
        database_url: str | None = DB_OPT,
        workers: int = typer.Option(2, "--workers", help="Worker threads."),
        log_level: str = typer.Option("info", "--log-level"),
    ) -> None:
        """Run durable-task workers only (scale out beside `opencs server` on PostgreSQL)."""

        _logging(log_level)
        rt = build_or_exit(Settings(data_dir=data_dir, database_url=database_url, workers=workers, usage_interval=0,
                                   registry_notifications=False))
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        rt.start()
        log.info("opencs worker running (%d threads)", workers)
        stop.wait()
        rt.close()


def _doctor_kubernetes(oci: str) -> None:
    """Kubernetes clusters are optional: report what they need, never fail the Swarm checks."""
    import shutil

    from opencs.engines.kubernetes import binary
    from opencs.engines.kubernetes.runtime import STD_PATH, missing_host_binaries

    try:
        state, detail = "ok", f"{binary.KUBERNETES_VERSION} at {binary.binary()}"
    except binary.BinaryMissing as e:
        state, detail = "--", str(e)
    typer.echo(f"[{state}] Kubernetes binary (optional, for Kubernetes clusters): {detail}")
    missing = missing_host_binaries(oci or "runc")
    have = "containerd, runc, crun, CNI plugins" if oci == "crun" else "containerd, runc, CNI plugins"
    detail = f"missing {', '.join(missing)}" if missing else have
    typer.echo(f"[{'--' if missing else 'ok'}] Kubernetes node runtime: {detail}")
    if not oci:
        crun = shutil.which("crun", path=STD_PATH)
        typer.echo(f"[{'ok' if crun else '--'}] Kubernetes containers start with crun (else runc, about twice the "
                   f"CPU per container start): {crun or 'crun missing (apt-get install crun)'}")
    lb = shutil.which("haproxy", path=STD_PATH)
    typer.echo(f"[{'ok' if lb else '--'}] Kubernetes with 3 or 5 masters (HAProxy in front of the apiservers): "
               f"{lb or 'haproxy missing'}")
