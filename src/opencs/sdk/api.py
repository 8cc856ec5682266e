"""Every method of both APIs, declared once; :class:`~opencs.sdk.Client`/``AsyncClient`` and
:class:`~opencs.sdk.AppClient`/``AsyncAppClient`` get them from these mixins."""

from __future__ import annotations

from opencs.sdk import application as app
from opencs.sdk import control as cs
from opencs.sdk import flows
from opencs.sdk.runners import flow, op, pager


class ControlPlaneAPI:
    """The signed control-plane API (clusters, nodes, instances, images, tasks, triggers, audit)."""

    version = op(cs.version)
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


class ApplicationAPI:
    """A cluster's Application API (spec §10) at its ``master_url``."""

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
    # volumes
    create_volume = op(app.create_volume)
    list_volumes = op(app.list_volumes)
    get_volume = op(app.get_volume)
    delete_volume = op(app.delete_volume)
