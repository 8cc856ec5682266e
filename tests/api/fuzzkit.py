"""Fuzzing the control-plane API from its own OpenAPI document with schemathesis (issue 13, item 4).

Shared by tests/api/test_fuzz.py (a bounded budget in the test command) and bench/fuzz.py (thousands
of requests over real HTTP). Each generated request is signed like the official SDKs sign (ROA or
ACS3, alternating) unless the run is unsigned; every reply goes through schemathesis' conformance
checks and through ours (JSON error bodies, no traceback, the request id header on every reply).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure, FailureGroup

from opencs.auth import signature as sig
from tests.conftest import Signer

REQUEST_ID = "x-acs-request-id"
# SSH registration logs in to whatever host the body names: a fuzzer must not reach beyond loopback
SKIP = {("POST", "/instances/register"),
        # starts Prometheus and Alertmanager, which outlive the fuzzed server (tests/monitoring covers it)
        ("POST", "/monitoring/enable")}


PLACEHOLDER = "opencs-fuzz-sign-me"
# 400s that a JSON schema cannot express, so schema-valid data may meet them (positive_data_acceptance)
SEMANTIC_400 = {
    ("POST", "/clusters"): "password needs three character classes; instance_type must be a known type",
    ("PUT", "/clusters/{cluster_id}"): "the same as above, and a new size differs from the current one",
    ("POST", "/api/v2/clusters/{cluster_id}"): "worker_instance_types must be known types; a password's classes",
    ("POST", "/clusters/{cluster_id}/triggers"): "a body cluster_id must equal the path's; action/service pairs",
    ("POST", "/clusters/{cluster_id}/instances/{instance_id}/reset"): "a password is stripped before its bounds apply",
    ("POST", "/clusters/{cluster_id}/alerts"): "a rule needs scale_out or scale_in, scale_in below scale_out",
    ("GET", "/hook/trigger"): "triggerUrl must be a token this server issued",
    ("POST", "/hook/trigger"): "triggerUrl must be a token this server issued",
}


class SigningAuth(requests.auth.AuthBase):
    """Signs the request exactly as it leaves (final URL, query and body bytes), alternating schemes.

    schemathesis' auth provider (`use_signatures`) marks each case with PLACEHOLDER; a case without
    it stays unsigned (its "no auth" probe), and any other credential (its "invalid auth" probe, or
    one it generated) becomes a well-formed signature made with a wrong secret, which is what the
    probe means for a signature scheme: the server must answer 403, not 2xx."""

    def __init__(self, ak: str, secret: str) -> None:
        self.signers = cycle([Signer(ak, secret, sig.ROA), Signer(ak, secret, sig.ACS3)])
        self.wrong = Signer(ak, secret + "-wrong", sig.ACS3)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        given = r.headers.pop("authorization", None)
        if given is None:
            return r
        url = urlsplit(r.url or "")
        body = r.body.encode() if isinstance(r.body, str) else (r.body or b"")
        query = parse_qsl(url.query, keep_blank_values=True)
        signer = next(self.signers) if given == PLACEHOLDER else self.wrong
        h = signer.headers(r.method or "GET", url.path, query, body, host=url.netloc,
                           content_type=r.headers.get("content-type"))
        r.headers.update(h)
        return r


def use_signatures(schema: Any) -> None:
    """Let schemathesis treat the signature as explicit auth (no generated Authorization values)."""

    @schema.auth(refresh_interval=None, retry_on=[]).skip_for(path=["/hook/trigger", "/metrics"])
    class _Marker:
        def get(self, case: Any, ctx: Any) -> str:
            return PLACEHOLDER

        def set(self, case: Any, data: str, ctx: Any) -> None:
            headers = case.headers if isinstance(case.headers, dict) else {}
            case.headers = {**headers, "Authorization": data}


@dataclass
class Tally:
    """What a fuzz run saw; `problems` keeps one example per kind of failure."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)  # "403 SignatureDoesNotMatch": n
    server_errors: int = 0
    non_json_errors: int = 0
    tracebacks: int = 0
    missing_request_id: int = 0
    conformance: Counter[str] = field(default_factory=Counter)
    problems: dict[str, str] = field(default_factory=dict)
    unsigned_accepted: int = 0  # bench/fuzz.py: unsigned 2xx on signed routes

    def note(self, kind: str, detail: str) -> None:
        self.problems.setdefault(kind, detail[:1500])

    @property
    def failures(self) -> int:
        return (self.server_errors + self.non_json_errors + self.tracebacks + self.missing_request_id
                + sum(self.conformance.values()))

    def report(self) -> str:
        lines = [f"requests: {self.requests}", f"statuses: {dict(sorted(self.statuses.items()))}",
                 f"5xx: {self.server_errors}", f"non-JSON errors: {self.non_json_errors}",
                 f"error codes: {dict(self.codes.most_common())}",
                 f"tracebacks: {self.tracebacks}", f"missing request id: {self.missing_request_id}",
                 f"conformance failures: {sum(self.conformance.values())} {dict(self.conformance)}"]
        lines += [f"--- {k}\n{v}" for k, v in self.problems.items()]
        return "\n".join(lines)


def _header(resp: Any, name: str) -> str | None:
    v = resp.headers.get(name)
    return v[0] if isinstance(v, list) and v else v


def _own_checks(case: Any, resp: Any, tally: Tally) -> None:
    where = f"{case.method} {case.formatted_path}"
    tally.requests += 1
    tally.statuses[resp.status_code] += 1
    if resp.status_code >= 500:
        tally.server_errors += 1
        tally.note(f"5xx {where}", f"{resp.status_code} {resp.text}\n{case.as_curl_command()}")
    if not _header(resp, REQUEST_ID):
        tally.missing_request_id += 1
        tally.note(f"no request id {resp.status_code}", f"{where}: {resp.text}")
    if "Traceback" in resp.text:
        tally.tracebacks += 1
        tally.note(f"traceback {where}", resp.text)
    if resp.status_code >= 400:
        try:
            body = json.loads(resp.content)
            ok = isinstance(body, dict) and {"Code", "Message", "RequestId"} <= set(body)
            if ok:
                tally.codes[f"{resp.status_code} {body['Code']}"] += 1
            ok = ok and body["RequestId"] == _header(resp, REQUEST_ID)
        except ValueError:
            ok = False
        if not ok:
            tally.non_json_errors += 1
            tally.note(f"bad error body {resp.status_code} {where}", resp.text)


def _check(case: Any, resp: Any, tally: Tally) -> None:
    _own_checks(case, resp, tally)
    try:
        case.validate_response(resp)
    except (FailureGroup, Failure, AssertionError) as e:
        semantic = resp.status_code == 400 and (case.method, case.operation.path) in SEMANTIC_400
        for name in _failure_names(e):
            if semantic and name == "RejectedPositiveData":
                continue
            tally.conformance[name] += 1
            tally.note(f"conformance {name} {case.method} {case.operation.path}",
                       f"{e}\n{case.as_curl_command()}")


def _failure_names(e: BaseException) -> list[str]:
    subs = getattr(e, "exceptions", None) or [e]
    return [type(s).__name__ for s in subs]


def operations(schema: Any) -> list[Any]:
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in SKIP:
            ops.append(op)
    return ops


def fuzz_operation(op: Any, call: Any, tally: Tally, examples: int, mode: GenerationMode) -> None:
    """Draw `examples` cases of one operation and send each through `call(case) -> response`."""

    try:
        strategy = op.as_strategy(generation_mode=mode)
    except Unsatisfiable:
        return

    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        _check(case, call(case), tally)

    with suppress(Unsatisfiable):  # nothing to negate (an operation without parameters or body)
        run()


def fuzz(schema: Any, call: Any, examples_per_op: int, modes: tuple[GenerationMode, ...] = (
        GenerationMode.POSITIVE, GenerationMode.NEGATIVE)) -> Tally:
    tally = Tally()
    for op in operations(schema):
        for mode in modes:
            fuzz_operation(op, call, tally, examples_per_op, mode)
    return tally


def config() -> Any:
    # 412: a precondition of this server (no node provider) - like 409, not a rejection of the data
    accepted = ["2xx", "401", "403", "404", "409", "412"]
    return schemathesis.Config.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": accepted}}})


def asgi_schema(app: Any, signed: bool) -> Any:
    """The document of an in-process app; cases are sent through schemathesis' ASGI client."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config())
    if signed:
        use_signatures(schema)
    return schema


def http_schema(base_url: str, signed: bool) -> Any:
    """The document of a server at `base_url`; cases are sent over HTTP."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config())
    if signed:
        use_signatures(schema)
    return schema


@contextmanager
def local_runtime(tmp: Path, database_url: str | None = None) -> Iterator[Any]:
    """A control plane with no node provider that can create nodes (cluster creation answers 412),
    no task workers, no per-cluster endpoints or routing: the API surface alone."""
    from opencs.composition import build
    from opencs.config import Settings

    rt = build(Settings(data_dir=tmp / "data", database_url=database_url, workers=0, local_nodes=False,
                               appapi=False, routing=False, monitor_interval=0))
    try:
        yield rt
    finally:
        rt.close()


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` behind a real uvicorn on a loopback port (keep-alive, h11/httptools), in a thread of
    this process; stopped on exit. Yields the base URL."""
    import threading

    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"fuzz-uvicorn-{port}", daemon=True)
    thread.start()
    end = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
