"""Clusters: the list with live state, create, scale, delete; a cluster's page (nodes, certs, docker env)."""

from __future__ import annotations

import io
import zipfile
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.routing import Route

from opencs.console.forms import field_errors, to_int
from opencs.console.web import Ctx, page, refused_status

CLUSTER_TYPES = ("swarm", "kubernetes")


def _clusters(ctx: Ctx, body: Any) -> list[dict[str, Any]]:
    rows = body if isinstance(body, list) else []
    return [{**c, "may_delete": ctx.may("DELETE", f"/clusters/{c['cluster_id']}")} for c in rows
            if isinstance(c, dict) and "cluster_id" in c]


async def _list(ctx: Ctx) -> tuple[list[dict[str, Any]], str]:
    reply = await ctx.api("GET", "/clusters")
    if not reply.ok:
        return [], "" if reply.status == 403 else reply.message
    return _clusters(ctx, reply.body), ""


@page
async def clusters(ctx: Ctx) -> Response:
    rows, error = await _list(ctx)
    return ctx.render("clusters.html", clusters=rows, error=error, may_create=ctx.may("POST", "/clusters"),
                      types=CLUSTER_TYPES, values={"size": "2", "instance_type": "ecs.n1.small"}, errors={})


@page
async def cluster_rows(ctx: Ctx) -> Response:
    rows, error = await _list(ctx)
    return ctx.render("_cluster_rows.html", clusters=rows, error=error)


@page
async def create(ctx: Ctx) -> Response:
    f = ctx.form
    body: dict[str, Any] = {"name": f.get("name", ""), "size": to_int(f.get("size")),
                            "instance_type": f.get("instance_type") or "ecs.n1.small",
                            "cluster_type": f.get("cluster_type") or "swarm"}
    if body["size"] is None:
        del body["size"]
    reply = await ctx.api("POST", "/clusters", body=body)
    if not reply.ok:
        errors, general = field_errors(reply)
        return ctx.render("_create_form.html", refused_status(ctx.request), values=f, errors=errors, general=general,
                          types=CLUSTER_TYPES,
                          headers={"HX-Retarget": "#create-form", "HX-Reswap": "outerHTML"})
    return ctx.render("_task.html", task_id=reply.body["task_id"], title=f"Create cluster {body['name']}",
                      cluster_id=reply.body.get("cluster_id", ""))


@page
async def delete(ctx: Ctx) -> Response:
    cid = ctx.request.path_params["cluster_id"]
    reply = await ctx.api("DELETE", f"/clusters/{cid}")
    if not reply.ok:
        return ctx.render("_flash.html", 200, error=reply.message)
    return ctx.render("_task.html", task_id=reply.body["task_id"], title=f"Delete cluster {cid}", cluster_id=cid)


@page
async def scale(ctx: Ctx) -> Response:
    cid = ctx.request.path_params["cluster_id"]
    reply = await ctx.api("PUT", f"/clusters/{cid}", body={"size": to_int(ctx.form.get("size"))})
    if not reply.ok:
        return ctx.render("_flash.html", 200, error=field_errors(reply)[0].get("size") or reply.message)
    return ctx.render("_task.html", task_id=reply.body["task_id"], title=f"Scale cluster {cid}", cluster_id=cid)


def docker_env(master_url: str, cluster_id: str) -> list[str]:
    """The exports a shell needs for `docker` against master_url with the downloaded certificates."""
    u = urlsplit(master_url or "")
    if not u.hostname:
        return []
    return [f"export DOCKER_HOST=tcp://{u.hostname}:{u.port or 443}", "export DOCKER_TLS_VERIFY=1",
            f"export DOCKER_CERT_PATH=$PWD/{cluster_id}-certs"]


async def _events(ctx: Ctx, cid: str) -> list[dict[str, Any]]:
    """The newest audit entries about this cluster (who did what to it, and how it ended)."""
    if not ctx.may("GET", "/audit"):
        return []
    reply = await ctx.api("GET", "/audit", query={"limit": "500"})
    entries = reply.body.get("entries", []) if reply.ok and isinstance(reply.body, dict) else []
    mine = [e for e in entries if isinstance(e, dict) and (f"cluster/{cid}" in str(e.get("resource", ""))
                                                         or e.get("resource") == cid)]
    return mine[::-1][:15]


async def _cluster_page(ctx: Ctx, cid: str) -> Response:
    reply = await ctx.api("GET", f"/clusters/{cid}")
    if not reply.ok:
        return ctx.render("error.html", reply.status if reply.status >= 400 else 404, message=reply.message)
    c = reply.body
    nodes = await ctx.api("GET", f"/clusters/{cid}/nodes")
    k8s = "kubernetes" in str(c.get("cluster_type", "")).lower()  # Kubernetes, ManagedKubernetes
    may_attach = ctx.may("POST", f"/clusters/{cid}/attach")
    free = await ctx.api("GET", "/instances", query={"free": "true"}) if may_attach else None
    return ctx.render(
        "cluster.html", c=c, nodes=nodes.body.get("nodes", []) if nodes.ok else [],
        nodes_error="" if nodes.ok or nodes.status == 403 else nodes.message,
        env=docker_env(c.get("master_url", ""), cid),
        may_certs=ctx.may("GET", f"/clusters/{cid}/certs") and not k8s,
        may_kubeconfig=ctx.may("GET", f"/k8s/{cid}/user_config") and k8s,
        may_scale=ctx.may("PUT", f"/clusters/{cid}"),
        may_delete=ctx.may("DELETE", f"/clusters/{cid}"),
        may_projects=ctx.may_app(cid, "GET", "/projects/") and not k8s,
        may_triggers=ctx.may("GET", f"/clusters/{cid}/triggers") and not k8s,
        may_remove=ctx.may("DELETE", f"/clusters/{cid}/ip/x"),
        may_reset=ctx.may("POST", f"/clusters/{cid}/instances/x/reset"),
        events=await _events(ctx, cid), may_attach=may_attach,
        free=free.body if free is not None and free.ok and isinstance(free.body, list) else [],
    )


@page
async def cluster(ctx: Ctx) -> Response:
    return await _cluster_page(ctx, ctx.request.path_params["cluster_id"])


@page
async def certs(ctx: Ctx) -> Response:
    """ca.pem, cert.pem and key.pem of the caller for this cluster, as one zip."""
    cid = ctx.request.path_params["cluster_id"]
    reply = await ctx.api("GET", f"/clusters/{cid}/certs")
    if not reply.ok or not isinstance(reply.body, dict):
        return ctx.render("error.html", reply.status if reply.status >= 400 else 500, message=reply.message)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, pem in reply.body.items():
            if isinstance(pem, str) and name in ("ca", "cert", "key"):
                info = zipfile.ZipInfo(f"{cid}-certs/{name}.pem")
                info.external_attr = (0o600 if name == "key" else 0o644) << 16
                z.writestr(info, pem)
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{cid}-certs.zip"',
                             "Cache-Control": "no-store"})


@page
async def kubeconfig(ctx: Ctx) -> Response:
    """DescribeClusterUserKubeconfig: a kubeconfig with the user's own client certificate."""
    cid = ctx.request.path_params["cluster_id"]
    reply = await ctx.api("GET", f"/k8s/{cid}/user_config")
    if not reply.ok or not isinstance(reply.body, dict) or not isinstance(reply.body.get("config"), str):
        return ctx.render("error.html", reply.status if reply.status >= 400 else 500, message=reply.message)
    return Response(reply.body["config"], media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{cid}.kubeconfig"',
                             "Cache-Control": "no-store"})


routes = [
    Route("/clusters", clusters, methods=["GET"]),
    Route("/clusters/rows", cluster_rows, methods=["GET"]),
    Route("/clusters", create, methods=["POST"]),
    Route("/clusters/{cluster_id}", cluster, methods=["GET"]),
    Route("/clusters/{cluster_id}/delete", delete, methods=["POST"]),
    Route("/clusters/{cluster_id}/scale", scale, methods=["POST"]),
    Route("/clusters/{cluster_id}/certs.zip", certs, methods=["GET"]),
    Route("/clusters/{cluster_id}/kubeconfig", kubeconfig, methods=["GET"]),
]
