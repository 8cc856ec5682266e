"""Every method of both APIs, declared once; :class:`~opencs.sdk.Client`/``AsyncClient`` and
:class:`~opencs.sdk.AppClient`/``AsyncAppClient`` get them from these mixins."""

from __future__ import annotations

from typing import Any, TypedDict

import httpx

from opencs.auth.signature import ROA
from opencs.sdk import application as app
from opencs.sdk import control as cs
from opencs.sdk import flows
from opencs.sdk.core import Endpoint, Signer, tls_context
from opencs.sdk.runners import _Runner, flow, op, pager


class SignedOptions(TypedDict, total=False):
    """The options of :class:`~opencs.sdk.Client` and :class:`~opencs.sdk.AsyncClient`."""

    scheme: str  # ROA ("acs AK:sig", the default) or ACS3
    timeout: float  # seconds, 30
    retries: int  # extra attempts for GET/HEAD/PUT/DELETE after a connection failure or 502/503/504; 2
    backoff: float  # seconds before the first retry, doubling; 0.3
    user_agent: str | None
    ca_file: str | None  # the CA an https:// endpoint is verified against (default: the system's)


def signed_setup(client: _Runner, endpoint: str, access_key_id: str, access_key_secret: str,
                 options: SignedOptions) -> dict[str, Any]:
    """Signing and retries of a signed client; the arguments of its ``httpx`` client."""
    unknown = set(options) - set(SignedOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    timeout = options.get("timeout", 30.0)
    signer = Signer(endpoint, access_key_id, access_key_secret, options.get("scheme", ROA), options.get("user_agent"))
    client._configure(signer, timeout, options.get("retries", 2), options.get("backoff", 0.3))
    return {"timeout": httpx.Timeout(timeout), "verify": tls_context(options.get("ca_file"))}


def app_options(timeout: float, kw: dict[str, Any]) -> dict[str, Any]:
    """The Application API client's options: a project's calls answer when done (``timeout`` ≥ 150 s)."""
    return {"timeout": max(timeout, 150.0), **kw}


class ControlPlaneAPI:
    """The signed control-plane API (clusters, nodes, instances, images, tasks, triggers, audit,
    events, monitoring, RAM)."""

    _endpoint: Endpoint

    @property
    def _signer(self) -> Signer:
        assert isinstance(self._endpoint, Signer)
        return self._endpoint

    @property
    def access_key_id(self) -> str:
        return self._signer.access_key_id

    @property
    def scheme(self) -> str:
        return self._signer.scheme

    @property
    def user_agent(self) -> str:
        return self._signer.user_agent

    #: any signed call: ``request(method, path, query=, body=, headers=)`` → the decoded JSON reply
    request = op(cs.raw_call)
    version = op(cs.version)
    healthz = op(cs.healthz)
    openapi = op(cs.openapi)
    # clusters (spec §5)
    list_clusters = op(cs.list_clusters)
    list_clusters_paged = op(cs.list_clusters_paged)
    iter_clusters = pager(flows.iter_clusters)
    describe_cluster = op(cs.describe_cluster)
    create_cluster = op(cs.create_cluster)
    scale_cluster = op(cs.scale_cluster)
    delete_cluster = op(cs.delete_cluster)
    attach_instances = op(cs.attach_instances)
    remove_node = op(cs.remove_node)
    reset_node = op(cs.reset_node)
    cluster_certs = op(cs.cluster_certs)
    cert_states = op(cs.cert_states)
    revoke_cert = op(cs.revoke_cert)
    revoke_my_certs = op(cs.revoke_my_certs)
    cluster_nodes = op(cs.cluster_nodes)
    iter_nodes = pager(flows.iter_nodes)
    wait_cluster = flow(flows.wait_cluster)
    list_images = op(cs.list_images)
    # Kubernetes clusters (spec §6)
    kubeconfig = op(cs.kubeconfig)
    attach_script = op(cs.attach_script)
    scale_out = op(cs.scale_out)
    remove_nodes = op(cs.remove_nodes)
    delete_cluster_nodes = op(cs.delete_cluster_nodes)
    # what the attach script calls from the machine (its token is the credential)
    attach_status = op(cs.attach_status)
    attach_node_script = op(cs.attach_node_script)
    attach_join = op(cs.attach_join)
    # tasks and the machine pool
    describe_task = op(cs.describe_task)
    wait_task = flow(flows.wait_task)
    list_instances = op(cs.list_instances)
    create_instances = op(cs.create_instances)
    delete_instance = op(cs.delete_instance)
    register_instance = op(cs.register_instance)
    # triggers (spec §11), audit, metrics
    create_trigger = op(cs.create_trigger)
    list_triggers = op(cs.list_triggers)
    delete_trigger = op(cs.delete_trigger)
    rotate_trigger = op(cs.rotate_trigger)
    invoke_trigger = op(cs.invoke_trigger)
    audit_log = op(cs.audit_log)
    metrics = op(cs.metrics)
    container_metrics = op(cs.container_metrics)
    # events, the monitoring stack, scaling alert rules (issue 12)
    cluster_events = op(cs.cluster_events)
    iter_events = pager(flows.iter_events)
    follow_events = pager(flows.follow_events)
    monitoring_status = op(cs.monitoring_status)
    enable_monitoring = op(cs.enable_monitoring)
    disable_monitoring = op(cs.disable_monitoring)
    create_alert_rule = op(cs.create_alert_rule)
    list_alert_rules = op(cs.list_alert_rules)
    delete_alert_rule = op(cs.delete_alert_rule)
    # the RAM API (2015-05-01): users, AccessKeys, policies; login profiles (the console's passwords)
    ram = op(cs.ram)
    create_login_profile = op(cs.create_login_profile)
    get_login_profile = op(cs.get_login_profile)
    update_login_profile = op(cs.update_login_profile)
    delete_login_profile = op(cs.delete_login_profile)
    # the bundled registry's login (Container Registry CreateUserInfo/UpdateUserInfo)
    set_registry_password = op(cs.set_registry_password)


class ApplicationAPI:
    """A cluster's Application API (spec §10) at its ``master_url``."""

    _endpoint: Endpoint

    @property
    def master_url(self) -> str:
        return self._endpoint.endpoint

    # projects
    list_projects = op(app.list_projects)
    create_project = op(app.create_project)
    get_project = op(app.get_project)
    update_project = op(app.update_project)
    confirm_update = op(app.confirm_update)
    rollback_update = op(app.rollback_update)
    start_project = op(app.start_project)
    stop_project = op(app.stop_project)
    kill_project = op(app.kill_project)
    redeploy_project = op(app.redeploy_project)
    delete_project = op(app.delete_project)
    wait_project = flow(flows.wait_project)
    # services
    list_services = op(app.list_services)
    get_service = op(app.get_service)
    start_service = op(app.start_service)
    stop_service = op(app.stop_service)
    kill_service = op(app.kill_service)
    scale_service = op(app.scale_service)
    wait_service = flow(flows.wait_service)
    # logs
    project_logs = op(app.project_logs)
    service_logs = op(app.service_logs)
    follow_project_logs = pager(flows.follow_project_logs)
    follow_service_logs = pager(flows.follow_service_logs)
    # volumes
    create_volume = op(app.create_volume)
    list_volumes = op(app.list_volumes)
    get_volume = op(app.get_volume)
    delete_volume = op(app.delete_volume)
