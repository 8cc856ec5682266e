"""Compose templates without Docker: parsing, interpolation, schema validation, normalization."""

from __future__ import annotations

import pytest

from opencs.compose import ComposeError, Options, build_stack, load
from opencs.compose import values as V
from opencs.compose.normalize import HASH_LABEL, NAMESPACE_LABEL
from opencs.compose.schema import validate
from opencs.engines.swarm.stack import config_hash

NO_IPVS = Options(ipvs=False)


def err(template: str, env: dict[str, str] | None = None, opts: Options | None = None,
        project: str = "p") -> ComposeError:
    with pytest.raises(ComposeError) as ei:
        build_stack(project, template, env, opts or NO_IPVS)
    return ei.value


# ---------------------------------------------------------------- load and versions


def test_v1_template_of_the_spec_with_crlf() -> None:
    cf = load("web:\r\n  image: nginx")
    assert cf.version == "1" and cf.services == {"web": {"image": "nginx"}}
    validate(cf)


@pytest.mark.parametrize(("text", "version"), [
    ("version: '2'\nservices:\n  web:\n    image: x", "2.0"),
    ("version: 2.4\nservices:\n  web:\n    image: x", "2.4"),
    ("version: '3'\nservices:\n  web:\n    image: x", "3.0"),
    ("version: '3.8'\nservices:\n  web:\n    image: x", "3.8"),
    ("services:\n  web:\n    image: x", "3.9"),  # the Compose Specification: no version
])
def test_versions(text: str, version: str) -> None:
    assert load(text).version == version


def test_v1_service_named_services_is_still_v1() -> None:
    cf = load("services:\n  image: busybox\n")
    assert cf.version == "1" and cf.services == {"services": {"image": "busybox"}}


@pytest.mark.parametrize(("text", "code", "needle"), [
    ("", "InvalidTemplate.Empty", "empty"),
    ("web: [\n", "InvalidTemplate.Yaml", "line 2"),
    ("- a\n- b\n", "InvalidTemplate.Yaml", "mapping"),
    ("web:\n  image: a\nweb:\n  image: b\n", "InvalidTemplate.Yaml", "duplicate key 'web'"),
    ("version: '5'\nservices: {}", "InvalidTemplate.Version", "unsupported version '5'"),
    ("version: [1]\nservices: {}", "InvalidTemplate.Version", "unsupported version"),
])
def test_load_errors(text: str, code: str, needle: str) -> None:
    with pytest.raises(ComposeError) as ei:
        load(text)
    assert ei.value.code == code and needle in str(ei.value)


# ---------------------------------------------------------------- interpolation


def test_interpolation_forms() -> None:
    env = {"SET": "v", "EMPTY": "", "N": 3}
    text = (
        "web:\n  image: img\n  environment:\n"
        "    A: $SET\n    B: ${SET}\n    C: ${UNSET:-dflt}\n    D: ${EMPTY:-dflt}\n    E: ${EMPTY-dflt}\n"
        "    F: ${UNSET-dflt}\n    G: ${SET:+alt}\n    H: ${EMPTY:+alt}\n    I: ${EMPTY+alt}\n"
        "    J: $$SET and $${SET}\n    K: ${N}x\n    L: pre-${SET}-post\n    M: ${SET:?must}\n"
    )
    cf = load(text, env)
    assert cf.services["web"]["environment"] == {
        "A": "v", "B": "v", "C": "dflt", "D": "dflt", "E": "", "F": "dflt", "G": "alt", "H": "", "I": "alt",
        "J": "$SET and ${SET}", "K": "3x", "L": "pre-v-post", "M": "v",
    }
    assert cf.warnings == []


def test_unset_variable_warns_and_is_blank() -> None:
    cf = load("web:\n  image: x\n  command: echo $NOPE ${NOPE}", {})
    assert cf.services["web"]["command"] == "echo  "
    assert cf.warnings == ["The NOPE variable is not set. Defaulting to a blank string."]


def test_keys_are_not_interpolated_and_project_name_is_set() -> None:
    m = build_stack("shop", "web:\n  image: x\n  labels:\n    $KEY: ${COMPOSE_PROJECT_NAME}", {"KEY": "k"}, NO_IPVS)
    assert m.services["web"].definition["labels"] == {"$KEY": "shop"}


@pytest.mark.parametrize(("text", "needle", "path"), [
    ("web:\n  image: ${IMG:?set IMG please}", "required variable IMG is missing a value: set IMG please",
     "web.image"),
    ("web:\n  image: ${EMPTY:?}", "required variable EMPTY", "web.image"),
    ("web:\n  image: x\n  command: [echo, '${a b}']", "invalid interpolation format", "web.command[1]"),
    ("web:\n  image: x\n  command: echo $1", "a '$' must start", "web.command"),
])
def test_interpolation_errors_name_the_path(text: str, needle: str, path: str) -> None:
    with pytest.raises(ComposeError) as ei:
        load(text, {"EMPTY": ""})
    assert needle in ei.value.message and ei.value.path == path


# ---------------------------------------------------------------- schema


@pytest.mark.parametrize(("text", "path", "needle"), [
    ("version: '2'\nservices:\n  web:\n    image: x\n    ports: ['80:abc']", "services.web.ports[0]", "invalid port"),
    ("web:\n  image: x\n  ports: ['80:abc']", "web.ports[0]", "invalid port"),
    ("web:\n  image: x\n  ports: [70000]", "web.ports[0]", "out of range"),
    ("version: '3'\nservices:\n  web:\n    imgae: x", "services.web.imgae", "did you mean 'image'"),
    ("version: '3'\nservices:\n  web:\n    image: x\n    deploy: {replicas: two}", "services.web.deploy.replicas",
     "not of type integer"),
    ("version: '3'\nservices:\n  web:\n    image: x\n    deploy: {update_config: {delay: 10x}}",
     "services.web.deploy.update_config.delay", "invalid duration"),
    ("version: '3'\nservices:\n  web:\n    image: x\n    deploy: {mode: both}", "services.web.deploy.mode",
     "is not one of"),
    ("version: '3'\nservices:\n  web:\n    image: x\n    volumes: ['data:rel']", "services.web.volumes[0]",
     "must be absolute"),
    ("version: '3'\nservices:\n  web:\n    image: x\n    ports: [{published: 80}]", "services.web.ports[0]",
     "target"),
    ("version: '2'\nservices:\n  'bad name':\n    image: x", "services", "invalid service name 'bad name'"),
    ("version: '2'\nservices:\n  web:\n    image: x\n    restart: sometimes", "services.web.restart",
     "does not match"),
    ("version: '2'\nservices:\n  web:\n    image: x\nnetworks:\n  n1: {driver: bridge}", "networks.n1.driver",
     "is not one of"),
    ("version: '2'\nservices: {}", "services", "should be non-empty"),
    ("version: '2'\nservices:\n  web:\n    image: x\nextra: 1", "extra", "unsupported key 'extra'"),
    ("web:\n  image: x\n  mem_limit: lots", "web.mem_limit", "invalid size"),
])
def test_schema_errors_name_the_offending_path(text: str, path: str, needle: str) -> None:
    cf = load(text)
    with pytest.raises(ComposeError) as ei:
        validate(cf)
    assert ei.value.path == path and needle in ei.value.message, str(ei.value)
    assert ei.value.code == "InvalidTemplate.Schema"


def test_extension_fields_are_allowed() -> None:
    cf = load("version: '3.4'\nx-common: &c\n  image: busybox\nservices:\n  web:\n    <<: *c\n    x-note: hi\n")
    validate(cf)
    assert cf.services["web"]["image"] == "busybox"


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(("raw", "expected"), [
    ("80", [(80, None, "tcp", "")]),
    (8080, [(8080, None, "tcp", "")]),
    ("8080:80", [(80, 8080, "tcp", "")]),
    ("127.0.0.1:8080:80/udp", [(80, 8080, "udp", "127.0.0.1")]),
    ("8000-8001:9000-9001", [(9000, 8000, "tcp", ""), (9001, 8001, "tcp", "")]),
    ({"target": 80, "published": "8080", "mode": "host"}, [(80, 8080, "tcp", "")]),
])
def test_parse_port(raw: object, expected: list[tuple[int, int | None, str, str]]) -> None:
    assert [(p.target, p.published, p.protocol, p.host_ip) for p in V.parse_port(raw)] == expected


@pytest.mark.parametrize("raw", ["abc", "80:", "8000-8010:80", "1-3:1-2", "90-80:90-80", "80/icmp", True])
def test_parse_port_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        V.parse_port(raw)


def test_parse_volume_and_sizes() -> None:
    assert V.parse_volume("/data") == V.VolumeSpec("volume", "", "/data")
    assert V.parse_volume("data:/d:ro") == V.VolumeSpec("volume", "data", "/d", read_only=True)
    assert V.parse_volume("/etc/acs/:/etc/acs/").type == "bind"
    assert V.parse_volume({"type": "tmpfs", "target": "/t", "tmpfs": {"size": "1m"}}).tmpfs_size == 1024**2
    with pytest.raises(ValueError, match="absolute"):
        V.parse_volume("./rel:/d")
    assert V.parse_duration("1m30s") == 90 * 10**9
    assert V.parse_duration("500ms") == 5 * 10**8
    assert V.parse_duration(2) == 2 * 10**9
    assert V.parse_bytes("512m") == 512 * 1024**2 and V.parse_bytes("1g") == 1024**3 and V.parse_bytes(7) == 7
    assert V.parse_cpus("0.5") == 5 * 10**8
    for bad, fn in (("1x", V.parse_duration), ("lots", V.parse_bytes), ("-1", V.parse_cpus)):
        with pytest.raises(ValueError):
            fn(bad)


# ---------------------------------------------------------------- normalize


SPEC_V2 = """
version: '2'
services:
  web:
    image: busybox
    command: httpd -f -p 8080 -h /www
    ports: ["8080:8080", "9000/udp"]
    restart: always
    labels:
      aliyun.scale: "3"
      aliyun.routing.port_8080: "http://web.example.com"
      aliyun.latest_image: "true"
      aliyun.logs: /var/log/a, /var/log/b
      aliyun.probe.url: http://container:8080/health
      aliyun.probe.initial_delay_seconds: "5"
      plain: label
    environment:
      - A=1
    links: ["db:database"]
    volumes: ["data:/data", "/etc/acs/:/etc/acs/:ro"]
    mem_limit: 256m
  db:
    image: mysql:5.7
    restart: on-failure:3
    environment:
      MYSQL_ROOT_PASSWORD: ${PWD}
volumes:
  data:
    driver_opts: {type: tmpfs, device: tmpfs}
"""


def test_normalize_without_ipvs_uses_dnsrr_host_ports_and_one_overlay_network() -> None:
    m = build_stack("wordpress", SPEC_V2, {"PWD": "pw"}, NO_IPVS)
    assert m.levels == [["db"], ["web"]] and m.order == ["db", "web"]
    assert set(m.networks) == {"default"}
    net = m.networks["default"]
    assert net.name == "wordpress_default" and net.driver == "overlay"
    assert net.labels[NAMESPACE_LABEL] == "wordpress"
    web = m.services["web"]
    spec = web.spec
    assert spec["Name"] == "wordpress_web" and web.full_name == "wordpress_web"
    assert spec["EndpointSpec"] == {"Mode": "dnsrr", "Ports": [
        {"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host", "PublishedPort": 8080},
        {"Protocol": "udp", "TargetPort": 9000, "PublishMode": "host"},
    ]}
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec["UpdateConfig"]["Order"] == "stop-first"  # a host port cannot be taken twice on a node
    labels = spec["Labels"]
    assert labels[NAMESPACE_LABEL] == "wordpress" and labels["com.docker.stack.image"] == "busybox"
    assert labels["aliyun.routing.port_8080"] == "http://web.example.com" and "plain" not in labels
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert cs["Args"] == ["httpd", "-f", "-p", "8080", "-h", "/www"] and "Command" not in cs
    assert cs["Env"] == ["A=1"] and cs["Labels"]["plain"] == "label"
    assert cs["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/health || exit 1"],
                                 "StartPeriod": 5 * 10**9}
    assert cs["Mounts"] == [
        {"Type": "volume", "Target": "/data", "Source": "wordpress_data", "VolumeOptions": {
            "Labels": {NAMESPACE_LABEL: "wordpress", "opencs.project": "wordpress"},
            "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}}},
        {"Type": "bind", "Target": "/etc/acs/", "ReadOnly": True, "Source": "/etc/acs/"},
    ]
    # restart: always, bounded (a crash loop ends as a failed service, compose/restart.py)
    assert spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "any", "MaxAttempts": 2, "Window": 120 * 10**9}
    assert spec["TaskTemplate"]["Resources"] == {"Limits": {"MemoryBytes": 256 * 1024**2}}
    assert spec["TaskTemplate"]["Networks"] == [{"Target": "wordpress_default", "Aliases": ["web"]}]
    assert web.extensions == {"scale": 3, "routing.port_8080": "http://web.example.com", "latest_image": True,
                              "logs": ["/var/log/a", "/var/log/b"], "probe.url": "http://container:8080/health",
                              "probe.initial_delay_seconds": "5"}
    assert web.latest_image and web.published == [(8080, "tcp", "host")]
    db = m.services["db"]
    assert db.spec["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 3}
    assert db.spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["MYSQL_ROOT_PASSWORD=pw"]
    assert db.spec["TaskTemplate"]["Networks"] == [{"Target": "wordpress_default", "Aliases": ["db", "database"]}]
    assert db.definition == {"image": "mysql:5.7", "restart": "on-failure:3",
                             "environment": {"MYSQL_ROOT_PASSWORD": "pw"}}
    assert any("no IPVS" in w and "host mode" in w for w in m.warnings)
    assert m.host_ports() == [(8080, "tcp", "web")]


def test_normalize_with_ipvs_keeps_vip_and_the_routing_mesh() -> None:
    m = build_stack("p", "web:\n  image: x\n  ports: ['80:80']", None, Options(ipvs=True))
    ep = m.services["web"].spec["EndpointSpec"]
    assert ep == {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress",
                                           "PublishedPort": 80}]}
    assert m.services["web"].spec["UpdateConfig"]["Order"] == "start-first"
    assert m.warnings == []


def test_explicit_vip_is_downgraded_without_ipvs() -> None:
    t = "version: '3'\nservices:\n  web:\n    image: x\n    deploy: {endpoint_mode: vip}"
    m = build_stack("p", t, None, NO_IPVS)
    assert m.services["web"].spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert any("IPVS" in w for w in m.warnings)


def test_v3_deploy_keys() -> None:
    t = """
version: '3.8'
services:
  api:
    image: x
    entrypoint: ["/bin/sh", "-c"]
    command: "echo hi"
    user: 1000
    healthcheck: {test: "true", interval: 10s, retries: 2}
    deploy:
      mode: replicated
      replicas: 2
      labels: {team: a}
      resources: {limits: {cpus: '0.5', memory: 64M}, reservations: {memory: 32m}}
      restart_policy: {condition: on-failure, delay: 2s, max_attempts: 4}
      update_config: {parallelism: 2, delay: 1s, order: start-first, failure_action: pause, monitor: 3s}
      placement: {constraints: [node.role == worker], preferences: [{spread: node.id}], max_replicas_per_node: 1}
  agent:
    image: x
    deploy: {mode: global}
    networks: [back]
networks:
  back: {}
  front: {external: true}
"""
    m = build_stack("p", t, None, NO_IPVS)
    api = m.services["api"].spec
    cs = api["TaskTemplate"]["ContainerSpec"]
    assert cs["Command"] == ["/bin/sh", "-c"] and cs["Args"] == ["echo", "hi"] and cs["User"] == "1000"
    assert cs["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 10 * 10**9, "Retries": 2}
    assert api["Labels"]["team"] == "a"
    assert api["TaskTemplate"]["Resources"] == {"Limits": {"NanoCPUs": 5 * 10**8, "MemoryBytes": 64 * 1024**2},
                                                "Reservations": {"MemoryBytes": 32 * 1024**2}}
    assert api["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure", "Delay": 2 * 10**9, "MaxAttempts": 4}
    assert api["UpdateConfig"] == {"Parallelism": 2, "FailureAction": "pause", "Monitor": 3 * 10**9,
                                   "Order": "start-first", "Delay": 10**9}
    assert api["TaskTemplate"]["Placement"] == {"Constraints": ["node.role == worker"],
                                                "Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}],
                                                "MaxReplicas": 1}
    agent = m.services["agent"]
    assert agent.spec["Mode"] == {"Global": {}} and agent.replicas is None and agent.extensions["scale"] == "global"
    assert agent.spec["TaskTemplate"]["Networks"] == [{"Target": "p_back", "Aliases": ["agent"]}]
    assert m.networks["front"].external and m.networks["front"].name == "front"
    assert m.networks["back"].name == "p_back"


def test_aliyun_labels_global_depends_and_rolling_updates() -> None:
    t = """
a:
  image: x
  labels:
    aliyun.global: "true"
    aliyun.depends: b, c
b:
  image: x
  labels: {aliyun.rolling_updates: "true", aliyun.rolling_updates.parallelism: "2"}
c:
  image: x
  labels: {aliyun.probe.cmd: "test -f /ok", aliyun.probe.timeout_seconds: "3"}
"""
    m = build_stack("p", t, None, NO_IPVS)
    assert m.levels == [["b", "c"], ["a"]]
    assert m.services["a"].mode == "global"
    assert m.services["b"].spec["UpdateConfig"]["Parallelism"] == 2
    assert m.services["c"].spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "test -f /ok"], "Timeout": 3 * 10**9}


def test_cluster_volumes_are_external_with_their_driver_config() -> None:
    cv = {"nasvolume": {"driver": "local", "options": {"type": "nfs", "o": "addr=h", "device": ":/abc"},
                        "labels": {"opencs.volume.driver": "nas"}}}
    m = build_stack("p", "web:\n  image: x\n  volumes: ['nasvolume:/data', 'own:/own']", None,
                    Options(ipvs=False, cluster_volumes=cv))
    mounts = m.services["web"].spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert mounts[0] == {"Type": "volume", "Target": "/data", "Source": "nasvolume", "VolumeOptions": {
        "Labels": {"opencs.volume.driver": "nas"},
        "DriverConfig": {"Name": "local", "Options": {"type": "nfs", "o": "addr=h", "device": ":/abc"}}}}
    assert mounts[1]["Source"] == "p_own"  # a v1 named volume belongs to the project
    t3 = "version: '3'\nservices:\n  web:\n    image: x\n    volumes: ['nasvolume:/d']\nvolumes:\n" \
         "  nasvolume: {external: true}"
    m3 = build_stack("p", t3, None, Options(ipvs=False, cluster_volumes=cv))
    assert m3.volumes["nasvolume"].cluster_volume


@pytest.mark.parametrize(("template", "path", "needle"), [
    ("web:\n  build: .", "web.build", "'build' is not supported"),
    ("web:\n  command: x", "web", "'image' is required"),
    ("web:\n  image: x\n  env_file: .env", "web.env_file", "not supported"),
    ("web:\n  image: x\n  network_mode: host", "web.network_mode", "not supported"),
    ("web:\n  image: x\n  ports: ['127.0.0.1:80:80']", "web.ports[0]", "host address 127.0.0.1"),
    ("a:\n  image: x\n  ports: ['80:80']\nb:\n  image: x\n  ports: ['80:81']", "b.ports", "also published"),
    ("a:\n  image: x\n  depends_on: [zz]", "a", "unknown service 'zz'"),
    ("a:\n  image: x\n  links: [b]\nb:\n  image: x\n  depends_on: [a]", "services", "circular dependency"),
    ("version: '2'\nservices:\n  a:\n    image: x\n    volumes: ['undeclared:/d']", "services.a.volumes[0]",
     "not declared"),
    ("version: '2'\nservices:\n  a:\n    image: x\n    networks: [nope]", "services.a.networks", "not declared"),
    ("a:\n  image: x\n  volume_driver: nas\n  volumes: ['v:/d']", "a.volumes[0]", "POST /volumes/create"),
    ("a:\n  image: x\n  labels: {aliyun.scale: many}", "a.labels.aliyun.scale", "integer"),
    ("a" * 62 + ":\n  image: x", "a" * 62, "longer than 63"),
    ("a:\n  image: x\n  volumes: ['/d', 'v:/d']", "a.volumes[1]", "duplicate mount point"),
])
def test_normalize_errors(template: str, path: str, needle: str) -> None:
    e = err(template)
    assert e.path == path and needle in e.message, str(e)


@pytest.mark.parametrize("name", ["", "-x", "a_b", "a.b", "a" * 65, 7])
def test_project_names(name: object) -> None:
    with pytest.raises(ComposeError) as ei:
        build_stack(name, "web:\n  image: x", None, NO_IPVS)  # type: ignore[arg-type]
    assert ei.value.code == "InvalidParameter.Name"


def test_config_hash_ignores_replicas_and_force_update() -> None:
    m = build_stack("p", "web:\n  image: x", None, NO_IPVS)
    spec = m.services["web"].spec
    h = config_hash(spec)
    scaled = {**spec, "Mode": {"Replicated": {"Replicas": 7}},
              "Labels": {**spec["Labels"], HASH_LABEL: "old"},
              "TaskTemplate": {**spec["TaskTemplate"], "ForceUpdate": 3}}
    assert config_hash(scaled) == h
    changed = build_stack("p", "web:\n  image: x\n  command: sleep 1", None, NO_IPVS).services["web"].spec
    assert config_hash(changed) != h


def test_service_helpers() -> None:
    from opencs.errors import BadRequest
    from opencs.services.projects import bump_version, parse_signal
    from opencs.services.projects.volumes import engine_spec, validate_options

    assert bump_version("1.0") == "1.1" and bump_version("v9") == "v10" and bump_version("abc") == "abc.1"
    assert parse_signal(None) == "SIGKILL" and parse_signal("term") == "SIGTERM" and parse_signal("9") == "9"
    with pytest.raises(BadRequest):
        parse_signal("NOPE")
    nas = validate_options("nas", {"diskid": "1", "host": "1234-x.cn-hangzhou.nas.aliyuncs.com", "path": "/abc"})
    assert nas["mode"] == "755"
    assert engine_spec("nas", nas) == ("local", {"type": "nfs", "device": ":/abc",
                                                 "o": "addr=1234-x.cn-hangzhou.nas.aliyuncs.com,rw,nfsvers=4.0,"
                                                      "noresvport"})
    for opts in ({"host": "h"}, {"host": "bad host", "path": "/a"}, {"host": "h", "path": "/a", "mode": "999"},
                 {"host": "h", "path": "/a", "junk": "1"}):
        with pytest.raises(BadRequest):
            validate_options("nas", opts)
    oss = {"bucket": "aliyun-docker", "ak_id": "i", "ak_secret": "s", "url": "oss-cn-hangzhou.aliyuncs.com",
           "no_stat_cache": "true", "other_opts": "-o allow_other -o default_permission=666"}
    assert validate_options("ossfs", oss) == oss
    for bad in ({**oss, "other_opts": "-o x; rm -rf /"}, {**oss, "no_stat_cache": "maybe"}, {**oss, "bucket": "B"}):
        with pytest.raises(BadRequest):
            validate_options("ossfs", bad)


@pytest.mark.parametrize(("restart", "policy"), [
    (None, {"Condition": "on-failure", "MaxAttempts": 2, "Window": 120 * 10**9}),  # one-shot commands complete
    ('""', {"Condition": "none"}),  # compose accepts an empty restart: its default, "no"
    ('"no"', {"Condition": "none"}),
    ("on-failure", {"Condition": "on-failure", "MaxAttempts": 2, "Window": 120 * 10**9}),
    ("on-failure:5", {"Condition": "on-failure", "MaxAttempts": 5}),
    ("unless-stopped", {"Condition": "any", "MaxAttempts": 2, "Window": 120 * 10**9}),
])
def test_restart_policies_are_bounded(restart: str | None, policy: dict[str, object]) -> None:
    line = f"\n    restart: {restart}" if restart is not None else ""
    m = build_stack("p", f"version: '2'\nservices:\n  job:\n    image: x{line}\n", None, NO_IPVS)
    assert m.services["job"].spec["TaskTemplate"]["RestartPolicy"] == policy
    v3 = ("version: '3'\nservices:\n  job:\n    image: x\n    deploy:\n"
          "      restart_policy: {condition: any, max_attempts: 0}\n")
    assert build_stack("p", v3, None, NO_IPVS).services["job"].spec["TaskTemplate"]["RestartPolicy"] == \
        {"Condition": "any", "MaxAttempts": 0}  # written unbounded: left so
