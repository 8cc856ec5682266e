"""Fuzz the control-plane API from its OpenAPI document over real HTTP (issue 13, item 4).

    python bench/fuzz.py [--signed 40] [--unsigned 10] [--database-url postgresql://...]

schemathesis generates valid and invalid requests for every operation (per operation and mode:
`--signed` signed cases, `--unsigned` unsigned ones) and sends them on one keep-alive connection to
a uvicorn serving the API in this process (no node provider: cluster creation answers 412; no task
workers). Every reply goes through schemathesis' conformance checks and ours. Prints the counts the
issue asks for: 5xx, non-JSON errors, tracebacks, conformance failures, replies without the request
id, and the TCP connections opened (1 = no reply reset the keep-alive connection). Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opencs.api.app import create_app  # noqa: E402
from opencs.api.openapi import UNSIGNED  # noqa: E402
from tests.api import fuzzkit  # noqa: E402


def connections(session: requests.Session, base: str) -> int:
    """TCP connections the session's pools opened (a reset keep-alive connection forces a new one)."""
    pools = session.get_adapter(base).poolmanager.pools
    return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 - the container has no __iter__


def run(label: str, base: str, signed: bool, per_op: int, auth: fuzzkit.SigningAuth) -> tuple[fuzzkit.Tally, int]:
    schema = fuzzkit.http_schema(base, signed=signed)
    session = requests.Session()
    session.trust_env = False  # loopback only, never a proxy
    kwargs = {"auth": auth} if signed else {}
    accepted = 0

    def call(case: Any) -> Any:
        nonlocal accepted
        resp = case.call(base_url=base, session=session, **kwargs)
        # unsigned and answered 2xx on a route the signature guards
        accepted += not signed and resp.status_code < 300 and case.operation.path not in UNSIGNED
        return resp

    t0 = time.monotonic()
    tally = fuzzkit.fuzz(schema, call, per_op)
    tally.unsigned_accepted = accepted
    opened = connections(session, base)
    session.close()
    print(f"== {label}: {time.monotonic() - t0:.1f} s, TCP connections opened: {opened}")
    print(tally.report())
    return tally, opened


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signed", type=int, default=40, help="signed cases per operation and generation mode")
    ap.add_argument("--unsigned", type=int, default=10, help="unsigned cases per operation and generation mode")
    ap.add_argument("--database-url", default=None, help="PostgreSQL instead of SQLite")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="opencs-fuzz-") as tmp, \
            fuzzkit.local_runtime(Path(tmp), args.database_url) as rt, fuzzkit.serve(create_app(rt)) as base:
        auth = fuzzkit.SigningAuth(*rt.keys.create("fuzz"))
        signed, c1 = run("signed", base, True, args.signed, auth)
        unsigned, c2 = run("unsigned", base, False, args.unsigned, auth)
    total = signed.requests + unsigned.requests
    failures = signed.failures + unsigned.failures
    accepted_unsigned = unsigned.unsigned_accepted
    print(f"== total: {total} generated requests, {failures} failures, "
          f"{accepted_unsigned} unsigned requests accepted, {c1 + c2} TCP connections")
    return 1 if failures or accepted_unsigned or c1 > 1 or c2 > 1 else 0


if __name__ == "__main__":
    sys.exit(main())
