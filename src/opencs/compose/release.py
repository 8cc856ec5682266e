"""The new version of a blue-green release (spec §10.13) as a stack beside the old one.

The old version keeps its services ``<project>_<svc>``; the new one is the same stack namespace with
services ``<project>_<svc>-new`` on their own networks ``<net>-new``, labelled ``opencs.release=green``.
Named volumes are shared. Published ports of the new version become host-mode ports chosen by the
engine (the old version holds the fixed ones)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from opencs.compose.load import ComposeError
from opencs.compose.models import MAX_SERVICE_NAME, StackModel

GREEN = "green"
RELEASE_LABEL = "opencs.release"
SUFFIX = "-new"  # <project>_<svc>-new, <project>_default-new


def green_model(model: StackModel) -> StackModel:
    """The stack of ``model`` as the new version beside the old one (see the module doc)."""
    m = copy.deepcopy(model)
    renamed: dict[str, str] = {}
    for key, nm in list(m.networks.items()):
        if nm.external:
            continue
        renamed[nm.name] = nm.name + SUFFIX
        m.networks[key] = dataclasses.replace(nm, name=nm.name + SUFFIX, labels={**nm.labels, RELEASE_LABEL: GREEN})
    for svc in m.services.values():
        svc.full_name += SUFFIX
        if len(svc.full_name) > MAX_SERVICE_NAME:
            raise ComposeError(f"service {svc.name}: the new version's service id {svc.full_name!r} is longer "
                               f"than {MAX_SERVICE_NAME} characters")
        spec = svc.spec
        spec["Name"] = svc.full_name
        spec["Labels"][RELEASE_LABEL] = GREEN
        cs = spec["TaskTemplate"]["ContainerSpec"]
        cs["Labels"] = {**(cs.get("Labels") or {}), RELEASE_LABEL: GREEN}
        for att in spec["TaskTemplate"].get("Networks") or []:
            att["Target"] = renamed.get(att["Target"], att["Target"])
        ep = spec.get("EndpointSpec") or {}
        if ep.get("Ports"):
            # the old version holds the fixed ports: the engine picks the new version's (host mode)
            seen: dict[tuple[int, str], dict[str, Any]] = {}
            for p in ep["Ports"]:
                k = (int(p["TargetPort"]), p.get("Protocol", "tcp"))
                seen.setdefault(k, {"Protocol": k[1], "TargetPort": k[0], "PublishMode": "host"})
            ep["Ports"] = list(seen.values())
        svc.published = []
    return m
