"""Clients we did not write: the official Alibaba SDKs, pointed at a real opencs server."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

REGION = "cn-beijing"


def core_client(endpoint: str, ak: str, secret: str) -> Any:
    from aliyunsdkcore.client import AcsClient

    c = AcsClient(ak, secret, REGION, auto_retry=False, timeout=60, connect_timeout=10)
    c.add_endpoint(REGION, "CS", endpoint)
    return c


def core_call(client: Any, req: Any, body: dict[str, Any] | None = None) -> Any:
    if body is not None:
        req.set_content_type("application/json")
        req.set_content(json.dumps(body).encode())
    raw = client.do_action_with_exception(req)
    return json.loads(raw) if raw else None


def tea_client(endpoint: str, ak: str, secret: str, v2: bool = False) -> Any:
    from alibabacloud_cs20151215.client import Client
    from alibabacloud_tea_openapi.utils_models import Config

    cfg = Config(access_key_id=ak, access_key_secret=secret, region_id=REGION, endpoint=endpoint, protocol="http",
                 read_timeout=60000, connect_timeout=10000)
    if v2:
        cfg.signature_algorithm = "v2"
    return Client(cfg)


def sdk291(name: str) -> Any:
    """A request class of aliyun-python-sdk-cs 2.9.1 (the Swarm-era classes that 4.8.1 dropped: certs,
    remove node by IP, reset node, version). .ci/run downloads its sdist into OPENCS_SDK291_DIR; we load
    the class file directly so that it can live beside 4.8.1."""
    d = os.environ.get("OPENCS_SDK291_DIR", str(Path(__file__).parents[1] / ".cache" / "sdk291"))
    sdists = sorted(Path(d).glob("aliyun-python-sdk-cs-2.9.1*.tar.gz"))
    if not sdists:
        pytest.skip(f"aliyun-python-sdk-cs 2.9.1 not downloaded into {d} (.ci/run does it)")
    root = Path(d) / "unpacked"
    if not root.exists():
        with tarfile.open(sdists[0]) as t:
            t.extractall(root, filter="data")
    (path,) = root.glob(f"*/aliyunsdkcs/request/v20151215/{name}.py")
    mod_name = f"_sdk291_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return getattr(sys.modules[mod_name], name)


def roa_call(client: Any, method: str, pattern: str, path: dict[str, str], body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None, request_class: str | None = None) -> Any:
    """A signed ROA call through sdk-core: aliyun-python-sdk-cs's request class for the route when it
    has one (its method and URI pattern must be the route's), otherwise sdk-core's CommonRequest.
    `pattern` is the route's template (``/clusters/{cluster_id}``); `path` its values in order."""
    import importlib
    import re

    names = re.findall(r"\{(\w+)\}", pattern)
    if request_class:
        req = getattr(importlib.import_module(f"aliyunsdkcs.request.v20151215.{request_class}"), request_class)()
        sdk_pattern = req.get_uri_pattern()
        assert req.get_method() == method and re.sub(r"\[\w+\]", "{}", sdk_pattern) == re.sub(
            r"\{\w+\}", "{}", pattern), f"{request_class} is {req.get_method()} {sdk_pattern}, not {method} {pattern}"
        keys = re.findall(r"\[(\w+)\]", sdk_pattern)
    else:
        from aliyunsdkcore.request import CommonRequest

        req = CommonRequest(version="2015-12-15", product="CS",
                            uri_pattern=re.sub(r"\{(\w+)\}", r"[\1]", pattern))
        req.set_method(method)
        keys = names
    for key, name in zip(keys, names, strict=True):
        req.add_path_param(key, path[name])
    for k, v in (query or {}).items():
        req.add_query_param(k, v)
    return core_call(client, req, body)


def ram_client(endpoint: str, ak: str, secret: str) -> Any:
    """aliyun-python-sdk-core for the RAM API (2015-05-01, RPC, on "/" of the same port)."""
    from aliyunsdkcore.client import AcsClient

    c = AcsClient(ak, secret, REGION, auto_retry=False, timeout=30, connect_timeout=10)
    c.add_endpoint(REGION, "Ram", endpoint)
    return c


def ram_call(client: Any, name: str, **params: str) -> dict[str, Any]:
    """One aliyun-python-sdk-ram request (`CreateUser`, UserName="alice", ...) over http."""
    import importlib

    mod = importlib.import_module(f"aliyunsdkram.request.v20150501.{name}Request")
    req = getattr(mod, f"{name}Request")()
    req.set_protocol_type("http")
    for k, v in params.items():
        getattr(req, f"set_{k}")(v)
    return dict(json.loads(client.do_action_with_exception(req)))
