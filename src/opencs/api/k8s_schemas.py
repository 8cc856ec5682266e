"""Request bodies of the Kubernetes cluster API (spec §6): create (dedicated §6.3, managed §6.4, and
the legacy §6.1 forms mapped onto them), scale-out (§6.7), legacy scale (§6.2) and node removal (§6.13).

Every field of §6.3's table is validated and named on error. What a field means on this server:
- honoured: name, num_of_nodes, master_count (3 or 5: etcd and the control plane on every master
  behind a load balancer; 1, the small-machine extension of the spec), worker/master instance types (node
  resource limits), container_cidr, service_cidr, node_cidr_mask, node_port_range, proxy_mode
  (iptables; ipvs is refused: the kernel has no IPVS), kubernetes_version (the built one),
  cpu_policy, addons (flannel maps to the project's routed pod network, Terway is refused),
  tags, disable_rollback, timeout_mins;
- accepted and recorded, reported in the cluster's `no_effect` list: billing, disks, vswitches,
  VPC, SNAT, SLB, monitoring and SSH settings, and fields unknown to §6.3.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from opencs.api.schemas import NAME_RE, PRINTABLE, Text64, TextId, _Body, check_password
from opencs.engines.kubernetes.binary import KUBERNETES_VERSION
from opencs.engines.kubernetes.edge import ADDON_TAINT, EDGE_PROFILE, EDGE_WORKER_LABEL
from opencs.services.instance_types import resources_for

MAX_WORKERS = 300  # spec §6.3 num_of_nodes [0, 300]
BUILT = KUBERNETES_VERSION.removeprefix("v")  # "1.34.4"
_VERSION_RE = re.compile(rf"^v?{re.escape(BUILT)}(-aliyun(edge)?\.\d+)?$")  # 1.12.6-aliyunedge.1: an edge version

InstanceType = Annotated[str, Field(max_length=64, pattern=PRINTABLE)]
SystemDisk = Literal["cloud", "cloud_efficiency", "cloud_ssd", "cloud_essd"]
ChargeType = Literal["PrePaid", "PostPaid"]
PeriodUnit = Literal["Week", "Month", "Year"]
DiskSize = Annotated[StrictInt, Field(ge=20, le=32768)]
Ids = Annotated[list[TextId], Field(min_length=1, max_length=5)]


class Tag(_Body):
    key: Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
    value: Annotated[str, Field(max_length=128, pattern=PRINTABLE)] = ""


class Addon(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=PRINTABLE)]
    version: Annotated[str, Field(max_length=64, pattern=PRINTABLE)] = ""
    config: Annotated[str, Field(max_length=8192)] | dict[str, Any] = ""
    disabled: StrictBool = False


def _types(v: list[str]) -> list[str]:
    for t in v:
        resources_for(t)
    return v


# what an accepted field that changes nothing here is reported as (cluster describe: no_effect)
NO_EFFECT = {
    "region_id": "one region: this server",
    "snat_entry": "nodes reach only this host's bridge; there is no NAT gateway",
    "endpoint_public_access": "the apiserver listens on the nodes' bridge address",
    "vpcid": "no VPCs: nodes share this host's bridge", "zoneid": "one zone",
    "master_vswitch_ids": "no vswitches: nodes share this host's bridge",
    "worker_vswitch_ids": "no vswitches: nodes share this host's bridge",
    "master_system_disk_category": "machines use this host's disk", "master_system_disk_size": "no disk quotas",
    "worker_system_disk_category": "machines use this host's disk", "worker_system_disk_size": "no disk quotas",
    "master_data_disk": "no data disks", "master_data_disk_category": "no data disks",
    "master_data_disk_size": "no data disks", "worker_data_disk": "no data disks",
    "worker_data_disk_category": "no data disks", "worker_data_disk_size": "no data disks",
    "master_instance_charge_type": "no billing", "master_period": "no billing",
    "master_period_unit": "no billing", "master_auto_renew": "no billing", "master_auto_renew_period": "no billing",
    "worker_instance_charge_type": "no billing", "worker_period": "no billing",
    "worker_period_unit": "no billing", "worker_auto_renew": "no billing", "worker_auto_renew_period": "no billing",
    "cloud_monitor_flags": "no cloud monitor agent", "ssh_flags": "nodes run no SSH server yet",
    "login_password": "nodes run no SSH server yet (kept encrypted)", "key_pair": "nodes run no SSH server yet",
    "public_slb": "no cloud SLB: the apiserver (with 3 or 5 masters, opencs's own load balancer) is on the bridge",
}
# fields with a default that are only reported when the body set them
_REPORT_IF_SET = frozenset(NO_EFFECT) - {"region_id", "snat_entry"}


class CreateKubernetesCluster(_Body):
    """POST /clusters with cluster_type "Kubernetes" (dedicated). Unknown fields are kept by name
    and reported as having no effect."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    cluster_type: Annotated[str, Field(max_length=32)]
    name: Annotated[str, Field(min_length=1, max_length=63, json_schema_extra={"pattern": NAME_RE.pattern})]
    region_id: Annotated[str, Field(min_length=1, max_length=64, pattern=PRINTABLE)]
    num_of_nodes: Annotated[StrictInt, Field(ge=0, le=MAX_WORKERS)]
    snat_entry: StrictBool
    master_instance_types: Annotated[list[InstanceType], Field(min_length=1, max_length=5)]
    master_system_disk_category: SystemDisk
    master_system_disk_size: DiskSize
    master_vswitch_ids: Ids
    worker_instance_types: Annotated[list[InstanceType], Field(min_length=1, max_length=10)]
    worker_system_disk_category: SystemDisk
    worker_system_disk_size: DiskSize
    worker_vswitch_ids: Ids
    key_pair: TextId | None = None
    login_password: Annotated[str, Field(min_length=8, max_length=30)] | None = None
    master_count: Literal[1, 3, 5] = 1
    master_instance_charge_type: ChargeType = "PostPaid"
    worker_instance_charge_type: ChargeType = "PostPaid"
    master_period: Annotated[StrictInt, Field(ge=1, le=60)] | None = None
    worker_period: Annotated[StrictInt, Field(ge=1, le=60)] | None = None
    master_period_unit: PeriodUnit | None = None
    worker_period_unit: PeriodUnit | None = None
    master_auto_renew: StrictBool = False
    worker_auto_renew: StrictBool = False
    master_auto_renew_period: Literal[1, 2, 3, 6, 12] | None = None
    worker_auto_renew_period: Literal[1, 2, 3, 6, 12] | None = None
    master_data_disk: StrictBool = False
    master_data_disk_category: SystemDisk | None = None
    master_data_disk_size: DiskSize | None = None
    # documented as string / int / string (§15.4 item 41): booleans, categories and sizes accepted
    worker_data_disk: StrictBool | Literal["true", "false"] = False
    worker_data_disk_category: SystemDisk | None = None
    worker_data_disk_size: DiskSize | Annotated[str, Field(pattern=r"^\d{2,5}$")] | None = None
    addons: Annotated[list[Addon], Field(max_length=20)] = []
    container_cidr: Annotated[str, Field(max_length=43)] = "172.16.0.0/16"
    service_cidr: Annotated[str, Field(max_length=43)] = "172.19.0.0/20"
    node_cidr_mask: Annotated[StrictInt, Field(ge=16, le=28)] | Annotated[str, Field(pattern=r"^\d{2}$")] = 24
    node_port_range: Annotated[str, Field(max_length=11)] = "30000-32767"
    proxy_mode: Literal["iptables", "ipvs"] = "iptables"
    kubernetes_version: Annotated[str, Field(max_length=32, pattern=PRINTABLE)] = BUILT
    cpu_policy: Literal["none", "static"] = "none"
    disable_rollback: StrictBool = True
    timeout_mins: Annotated[StrictInt, Field(ge=1, le=1440)] = 60
    tags: Annotated[list[Tag], Field(max_length=20)] = []
    endpoint_public_access: StrictBool = True
    cloud_monitor_flags: StrictBool = False
    ssh_flags: StrictBool = False
    vpcid: TextId = ""
    profile: Literal["Default"] | None = None  # "Edge" only with ManagedKubernetes (§6.5)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """The §6.1 CLI templates: single-zone (singular types, vswitchid) and multi-zone (_a/_b/_c)."""
        if not isinstance(data, dict):
            return data
        d = dict(data)
        for role in ("master", "worker"):
            plural, zones = f"{role}_instance_types", [f"{role}_instance_type_{z}" for z in "abc"]
            if plural not in d and f"{role}_instance_type" in d:
                d[plural] = [d[f"{role}_instance_type"]]
            elif plural not in d and any(z in d for z in zones):
                d[plural] = [d[z] for z in zones if z in d]
            vs = f"{role}_vswitch_ids"
            if vs not in d and "vswitchid" in d:
                d[vs] = [d["vswitchid"]]
            elif vs not in d and any(f"vswitch_id_{z}" in d for z in "abc"):
                d[vs] = [d[f"vswitch_id_{z}"] for z in "abc" if f"vswitch_id_{z}" in d]
        if "num_of_nodes" not in d and any(f"num_of_nodes_{z}" in d for z in "abc"):
            nums = [d[f"num_of_nodes_{z}"] for z in "abc" if f"num_of_nodes_{z}" in d]
            d["num_of_nodes"] = sum(nums) if all(type(n) is int for n in nums) else nums[0]
        return d

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("1-63 letters, Chinese characters, digits or '-', not starting with '-'")
        return v

    @field_validator("master_instance_types", "worker_instance_types")
    @classmethod
    def _itypes(cls, v: list[str]) -> list[str]:
        return _types(v)

    @field_validator("cluster_type")
    @classmethod
    def _ctype(cls, v: str) -> str:
        if v.lower() != "kubernetes":
            raise ValueError("'Kubernetes' for a dedicated cluster")
        return "Kubernetes"

    @field_validator("login_password")
    @classmethod
    def _pw(cls, v: str | None) -> str | None:
        return None if v is None else check_password(v)

    @field_validator("container_cidr", "service_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        net = ipaddress.ip_network(v, strict=False)
        if net.version != 4 or not 8 <= net.prefixlen <= 24:
            raise ValueError("an IPv4 CIDR block with a prefix length of 8 to 24")
        return str(net)

    @field_validator("node_cidr_mask")
    @classmethod
    def _mask(cls, v: int | str) -> int:
        n = int(v)
        if not 16 <= n <= 28:
            raise ValueError("a prefix length of 16 to 28")
        return n

    @field_validator("node_port_range")
    @classmethod
    def _ports(cls, v: str) -> str:
        m = re.fullmatch(r"(\d{5})-(\d{5})", v)
        if not m or not 30000 <= int(m[1]) < int(m[2]) <= 65535:
            raise ValueError("'low-high' within [30000, 65535], e.g. '30000-32767'")
        return v

    @field_validator("proxy_mode")
    @classmethod
    def _proxy(cls, v: str) -> str:
        if v == "ipvs":
            raise ValueError("ipvs needs the kernel's IPVS support (ip_vs), which this host's kernel lacks and "
                             "cannot load (no loadable modules): use iptables")
        return v

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION_RE.match(v):
            raise ValueError(f"{v!r} is not offered: this server offers Kubernetes {BUILT}")
        return BUILT

    @field_validator("addons")
    @classmethod
    def _addons(cls, v: list[Addon]) -> list[Addon]:
        for a in v:
            if a.name.lower() == "terway" or a.name.lower().startswith("terway-"):
                raise ValueError("terway needs Alibaba Cloud ENIs: this server's pod network is its own routed "
                                 "bridge network (ask for flannel, or no network add-on)")
        return v

    @model_validator(mode="after")
    def _checks(self) -> CreateKubernetesCluster:
        if self.key_pair and self.login_password:
            raise ValueError("key_pair and login_password are mutually exclusive: send one of them")
        if not self.key_pair and not self.login_password:
            raise ValueError("one of key_pair or login_password is required")
        if ipaddress.ip_network(self.container_cidr).overlaps(ipaddress.ip_network(self.service_cidr)):
            raise ValueError(f"container_cidr {self.container_cidr} overlaps service_cidr {self.service_cidr}")
        if int(self.node_cidr_mask) < ipaddress.ip_network(self.container_cidr).prefixlen:
            raise ValueError(f"node_cidr_mask {self.node_cidr_mask} is wider than container_cidr {self.container_cidr}")
        return self

    # ------------------------------------------------------------ what the cluster service reads

    @property
    def size(self) -> int:
        return self.master_count + self.num_of_nodes

    @property
    def password(self) -> str | None:
        return self.login_password

    @property
    def network_mode(self) -> str:
        return "vpc"

    @property
    def vpc_id(self) -> str:
        return self.vpcid

    @property
    def vswitch_id(self) -> str:
        return self.worker_vswitch_ids[0]

    @property
    def subnet_cidr(self) -> str:
        return ""

    @property
    def instance_type(self) -> str:
        return self.worker_instance_types[0]

    managed: ClassVar[bool] = False
    profile_name: ClassVar[str] = "Default"

    def control_plane_view(self) -> dict[str, Any]:
        """What describe says of the control plane (who runs it, where the endpoint is)."""
        if self.master_count == 1:
            where = "one master (etcd, apiserver, controller manager, scheduler; also a tainted node)"
        else:
            where = (f"{self.master_count} masters, each running an etcd member, an apiserver, a controller manager "
                     "and a scheduler (leader election), behind an HAProxy TCP load balancer on a machine of its own")
        return {"master_count": self.master_count, "control_plane": where}

    def no_effect(self) -> list[dict[str, str]]:
        out = [{"field": f, "reason": NO_EFFECT[f]} for f in NO_EFFECT
               if f in self.model_fields_set or (f not in _REPORT_IF_SET and f in type(self).model_fields)]
        if len(set(self.master_instance_types)) > 1 or len(set(self.worker_instance_types)) > 1:
            out.append({"field": "worker_instance_types", "reason": "every node gets the first type's limits"})
        for a in self.addons:
            if a.name.lower() == "flannel":
                out.append({"field": "addons.flannel", "reason": "pods use the project's routed bridge network "
                                                                 "(per-node pod CIDRs), which serves as flannel here"})
            elif a.name.lower() not in ("coredns",):
                out.append({"field": f"addons.{a.name}", "reason": "not installed: this server deploys CoreDNS only"})
        out += [{"field": k, "reason": "not a field of spec §6.3"} for k in list(self.model_extra or {})[:50]]
        return out

    def stored_spec(self) -> dict[str, Any]:
        """What the store keeps (never the password): the engine's settings and the describe view."""
        settings = {
            "version": self.kubernetes_version, "master_count": self.master_count, "num_of_nodes": self.num_of_nodes,
            "container_cidr": self.container_cidr, "service_cidr": self.service_cidr,
            "node_cidr_mask": int(self.node_cidr_mask), "node_port_range": self.node_port_range,
            "proxy_mode": self.proxy_mode, "cpu_policy": self.cpu_policy,
            "master_instance_type": self.master_instance_types[0], "worker_instance_type": self.instance_type,
            "managed": self.managed, "profile": self.profile_name,
        }
        body = self.model_dump(exclude={"login_password", "name"}, exclude_unset=True)
        for k in list(self.model_extra or {}):
            body.pop(k, None)
        # DescribeClusterDetail's Kubernetes fields (the Tea SDK's model names them)
        view = {
            "current_version": self.kubernetes_version, "init_version": self.kubernetes_version,
            "container_cidr": self.container_cidr, "service_cidr": self.service_cidr,
            "node_cidr_mask": str(self.node_cidr_mask), "proxy_mode": self.proxy_mode, "profile": self.profile_name,
            **self.control_plane_view(), "cluster_spec": "",
            "tags": [t.model_dump() for t in self.tags], "vswitch_ids": list(self.worker_vswitch_ids),
            "parameters": {"disable_rollback": str(self.disable_rollback).lower(),
                           "timeout_mins": str(self.timeout_mins), "cpu_policy": self.cpu_policy,
                           "node_port_range": self.node_port_range,
                           "addons": ",".join(a.name for a in self.addons)},
            "no_effect": self.no_effect(),
        }
        return {"kubernetes": settings, "request": body, "view": view, "disable_rollback": self.disable_rollback}


_MASTER_FIELDS = frozenset(f for f in CreateKubernetesCluster.model_fields if f.startswith("master_"))


class CreateManagedKubernetesCluster(CreateKubernetesCluster):
    """POST /clusters with cluster_type "ManagedKubernetes" (§6.4, legacy §6.1.3): no master fields —
    opencs runs the control plane in a machine of its own that is not a node; every instance is a
    worker. Master fields sent anyway are recorded as having no effect."""

    num_of_nodes: Annotated[StrictInt, Field(ge=1, le=MAX_WORKERS)]
    vswitch_ids: Ids
    master_count: Literal[1] = 1
    master_instance_types: Annotated[list[InstanceType], Field(min_length=1, max_length=5)] = ["ecs.n1.medium"]
    master_system_disk_category: SystemDisk = "cloud_efficiency"
    master_system_disk_size: DiskSize = 40
    master_vswitch_ids: Ids = ["-"]
    worker_vswitch_ids: Ids = ["-"]
    managed: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _managed(cls, data: Any) -> Any:
        """vswitch_ids is §6.4's name; the legacy body (§6.1.3) says vswitchid."""
        if isinstance(data, dict) and "vswitch_ids" not in data and "vswitchid" in data:
            data = {**data, "vswitch_ids": [data["vswitchid"]]}
        return data

    @field_validator("cluster_type")
    @classmethod
    def _ctype(cls, v: str) -> str:
        if v.lower() != "managedkubernetes":
            raise ValueError("'ManagedKubernetes' for a managed cluster")
        return "ManagedKubernetes"

    @model_validator(mode="after")
    def _workers_vswitches(self) -> CreateManagedKubernetesCluster:
        self.worker_vswitch_ids = list(self.vswitch_ids)
        return self

    @property
    def size(self) -> int:
        return self.num_of_nodes  # the control plane is not a node

    def control_plane_view(self) -> dict[str, Any]:
        return {"master_count": 0, "control_plane": "managed: etcd, apiserver, controller manager and scheduler run "
                                                    "by opencs in a machine of its own, outside the workers"}

    def no_effect(self) -> list[dict[str, str]]:
        out = [x for x in super().no_effect() if x["field"] not in _MASTER_FIELDS | {"worker_vswitch_ids"}]
        out += [{"field": f, "reason": "a managed cluster has no masters: opencs runs its control plane"}
                for f in sorted(self.model_fields_set & _MASTER_FIELDS)]
        if "vswitch_ids" in self.model_fields_set:
            out.append({"field": "vswitch_ids", "reason": NO_EFFECT["worker_vswitch_ids"]})
        return out


EdgeIds = Annotated[list[TextId], Field(min_length=1, max_length=3)]


class CreateEdgeKubernetesCluster(CreateManagedKubernetesCluster):
    """POST /clusters with cluster_type "ManagedKubernetes" and profile "Edge" (§6.5): a managed control
    plane whose `num_of_nodes` instances are cloud nodes (labelled is-edge-worker=false, tainted for
    add-ons only) and whose attached machines are edge nodes (is-edge-worker=true); engines/kubernetes/edge.py."""

    profile: Literal["Edge"]  # type: ignore[assignment]  # the edge marker, required (§6.5)
    num_of_nodes: Annotated[StrictInt, Field(ge=0, le=MAX_WORKERS)]  # §6.5's range; 0 is refused below
    vswitch_ids: EdgeIds
    # §6.5 lists the cloud workers' types in its template only: the smallest general type by default
    worker_instance_types: Annotated[list[InstanceType], Field(min_length=1, max_length=10)] = ["ecs.n1.medium"]
    profile_name: ClassVar[str] = EDGE_PROFILE

    @field_validator("num_of_nodes")
    @classmethod
    def _cloud_nodes(cls, v: int) -> int:
        if v < 1:
            raise ValueError("at least 1: an edge cluster's add-ons (CoreDNS) run on its cloud nodes, as ACK@Edge "
                             "makes at least one ECS instance; edge nodes join later (attach, attach script)")
        return v

    @model_validator(mode="after")
    def _edge(self) -> CreateEdgeKubernetesCluster:
        if not self.endpoint_public_access:
            raise ValueError("endpoint_public_access must be true for an edge cluster: its edge nodes reach the "
                             "control plane through the cluster's endpoint (§6.5)")
        return self

    def control_plane_view(self) -> dict[str, Any]:
        return {"master_count": 0, "control_plane": "managed: etcd, apiserver, controller manager and scheduler run "
                                                    "by opencs in a machine of its own, outside the workers; edge "
                                                    f"profile: the cluster's instances are cloud nodes "
                                                    f"({EDGE_WORKER_LABEL}=false, {ADDON_TAINT}, running its "
                                                    f"add-ons), attached machines are edge nodes "
                                                    f"({EDGE_WORKER_LABEL}=true)"}



class ScaleOutCluster(_Body):
    """POST /api/v2/clusters/{id} (§6.7): `count` more workers."""

    count: Annotated[StrictInt, Field(ge=1, le=MAX_WORKERS)]
    vswitch_ids: Ids
    worker_data_disk: StrictBool
    worker_instance_types: Annotated[list[InstanceType], Field(min_length=1, max_length=10)]
    key_pair: TextId | None = None
    login_password: Annotated[str, Field(min_length=8, max_length=30)] | None = None
    worker_system_disk_category: SystemDisk | None = None
    worker_system_disk_size: DiskSize | None = None
    tags: Annotated[list[Tag], Field(max_length=20)] = []

    @field_validator("worker_instance_types")
    @classmethod
    def _itypes(cls, v: list[str]) -> list[str]:
        return _types(v)

    @field_validator("login_password")
    @classmethod
    def _pw(cls, v: str | None) -> str | None:
        return None if v is None else check_password(v)


class ScaleKubernetes(_Body):
    """Legacy PUT /clusters/{id} of a Kubernetes cluster (§6.2): num_of_nodes workers in all."""

    num_of_nodes: Annotated[StrictInt, Field(ge=0, le=MAX_WORKERS)]
    disable_rollback: StrictBool = True
    timeout_mins: Annotated[StrictInt, Field(ge=1, le=1440)] = 60
    worker_instance_type: Text64 | None = None
    login_password: Annotated[str, Field(min_length=8, max_length=30)] | None = None


class RemoveNodes(_Body):
    """POST /api/v2/clusters/{id}/nodes/remove and POST /clusters/{id}/nodes (§6.13): node names,
    instance ids or private IPs of workers."""

    # taken as sent: stripping would turn a schema-valid " " into an invalid ""
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    nodes: Annotated[list[Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]],
                     Field(min_length=1, max_length=50, json_schema_extra={"uniqueItems": True})]
    release_node: StrictBool = False
    drain_node: StrictBool = True

    @field_validator("nodes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a node twice")
        return v
