"""SQLAlchemy models. These are storage rows, not API schemas (those live beside the routes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from opencs.store.project_state import ProjectState, ProjectStateType
from opencs.store.tenancy import ROOT_ACCOUNT_ID, ROOT_OWNER_USER_ID, owning_account


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=False)}


class Account(Base):
    """A tenant: owns clusters, instances and (through them) projects, triggers and registry namespaces."""

    __tablename__ = "accounts"
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime]


class User(Base):
    """A RAM user of an account; the owner (one per account) is not subject to policies."""

    __tablename__ = "users"
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    comments: Mapped[str] = mapped_column(String(255), default="")
    is_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime]
    updated: Mapped[datetime]
    # the Argon2id hash of the password the user set for `docker login` (CR CreateUserInfo); None: none
    registry_password: Mapped[str | None] = mapped_column(String(255), nullable=True, default=None)
    # the last console sign-in with the user's password (RAM GetUser's LastLoginDate); None: never
    last_login: Mapped[datetime | None] = mapped_column(nullable=True, default=None)

    __table_args__ = (UniqueConstraint("account_id", "user_name", name="ux_users_account_name"),)


class LoginProfile(Base):
    """A RAM user's console logon (RAM CreateLoginProfile): the Argon2id hash of its password, never
    the password. The user's deletion takes it along."""

    __tablename__ = "login_profiles"
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    password_reset_required: Mapped[bool] = mapped_column(Boolean, default=False)
    mfa_bind_required: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime]
    updated: Mapped[datetime]


class Policy(Base):
    """A custom RAM policy of an account (one version: v1)."""

    __tablename__ = "policies"
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    policy_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(String(1024), default="")
    document: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime]
    updated: Mapped[datetime]


class PolicyAttachment(Base):
    __tablename__ = "policy_attachments"
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    policy_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    attached: Mapped[datetime]


class AuditEntry(Base):
    """One mutating call, append-only; `hash` chains over the previous entry's hash."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    account_id: Mapped[str] = mapped_column(String(32), default="", index=True)
    user_name: Mapped[str] = mapped_column(String(64), default="")
    access_key_id: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(String(512), default="")
    source: Mapped[str] = mapped_column(String(128), default="")
    request_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AccessKey(Base):
    __tablename__ = "access_keys"
    access_key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # the RAM user the key belongs to (existing keys: the first account's owner)
    user_id: Mapped[str] = mapped_column(String(32), index=True, default=ROOT_OWNER_USER_ID)
    secret_enc: Mapped[str] = mapped_column(Text)  # Fernet token, never the plain secret
    description: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime]
    last_used: Mapped[datetime | None] = mapped_column(nullable=True)


class Nonce(Base):
    """Seen x-acs-signature-nonce values; the primary key makes a replay fail on insert, in every
    process sharing the database."""

    __tablename__ = "nonces"
    access_key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(index=True)


class ConsoleSession(Base):
    """A signed-in console browser, shared by every API process on the database. Keyed by the
    SHA-256 of the cookie's session id: the id itself is never stored."""

    __tablename__ = "console_sessions"
    sid_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_key_id: Mapped[str] = mapped_column(String(64), default="")  # "" for a password session
    user_id: Mapped[str] = mapped_column(String(32), default="")  # a password session's user
    stamp: Mapped[str] = mapped_column(String(64), default="")  # of the password it was opened with
    must_reset: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime]
    expires: Mapped[datetime] = mapped_column(index=True)


class FailedSignIn(Base):
    """One failed console sign-in, counted against a login name and a source address (a row each,
    keyed by a SHA-256: a name typed into the form is never stored)."""

    __tablename__ = "failed_signins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(index=True)
    __table_args__ = (Index("ix_failed_signins_key_hash_at", "key_hash", "at"),)


class Cluster(Base):
    __tablename__ = "clusters"
    cluster_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    cluster_type: Mapped[str] = mapped_column(String(32), default="swarm")
    # the account of the signed call that created it (opencs.store.tenancy)
    account_id: Mapped[str] = mapped_column(String(32), index=True, default=owning_account,
                                            server_default=ROOT_ACCOUNT_ID)
    state: Mapped[str] = mapped_column(String(16), index=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    region_id: Mapped[str] = mapped_column(String(64), default="")
    network_mode: Mapped[str] = mapped_column(String(16), default="vpc")
    vpc_id: Mapped[str] = mapped_column(String(64), default="")
    vswitch_id: Mapped[str] = mapped_column(String(64), default="")
    subnet_cidr: Mapped[str] = mapped_column(String(64), default="")
    instance_type: Mapped[str] = mapped_column(String(64), default="")
    master_url: Mapped[str] = mapped_column(String(255), default="")
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    external_loadbalancer_id: Mapped[str] = mapped_column(String(128), default="")
    security_group_id: Mapped[str] = mapped_column(String(64), default="")
    # the create body minus secrets; engine-specific settings
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    password_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the cluster CA and the user's client certificate (keys encrypted)
    ca_cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    ca_key_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_key_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the CA of sub-users' client certificates: master_url trusts it, the node engines do not
    user_ca_cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_ca_key_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime]
    # bumped by every UPDATE (ORM or Core): the list cache of ClusterService keys on it
    updated: Mapped[datetime] = mapped_column(onupdate=lambda: _utcnow())

    __table_args__ = (
        # names are unique among an account's clusters that still exist
        Index(
            "ux_clusters_live_name",
            "account_id",
            "name",
            unique=True,
            sqlite_where=text("state != 'deleted'"),
            postgresql_where=text("state != 'deleted'"),
        ),
        # the list's order, covering what GET /clusters' change check and a page read (0017)
        Index("ix_clusters_list", "created", "cluster_id", "state", "updated", "account_id"),
        Index("ix_clusters_updated", "updated"),
    )


class ClusterCert(Base):
    """A client certificate of a cluster issued to a user (GET /clusters/{id}/certs), by serial.
    master_url accepts it while it is unexpired, unrevoked and its user (and AccessKey) still exist."""

    __tablename__ = "cluster_certs"
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)  # lowercase hex
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    user_name: Mapped[str] = mapped_column(String(64), default="")
    # the key whose signed call obtained it ("": issued to the owner outside a signed call)
    access_key_id: Mapped[str] = mapped_column(String(64), default="")
    created: Mapped[datetime]
    not_after: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(64), default="")


class InstanceRow(Base):
    """A node machine (the spec's ECS instance): free, or a member of one cluster."""

    __tablename__ = "instances"
    instance_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(32), index=True, default=owning_account,
                                            server_default=ROOT_ACCOUNT_ID)
    cluster_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    private_ip: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[str] = mapped_column(String(16), default="")  # manager | worker | "" (free)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    health: Mapped[str] = mapped_column(String(32), default="unknown")
    docker_host: Mapped[str] = mapped_column(String(255), default="")
    swarm_node_id: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime]
    # bumped by every UPDATE (ORM or Core): the endpoint manager's change mark reads its newest
    updated: Mapped[datetime] = mapped_column(index=True, onupdate=lambda: _utcnow())


class Task(Base):
    """A durable long operation (T-…). Stages are persisted one by one so that a restarted
    worker resumes after the last finished stage."""

    __tablename__ = "tasks"
    task_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_type: Mapped[str] = mapped_column(String(64))
    cluster_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending|running|success|fail
    current_stage: Mapped[str] = mapped_column(String(64), default="")
    stages: Mapped[list[Any]] = mapped_column(JSON, default=list)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    scratch: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # state kept between stages
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)  # unix time
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # desired state wins: a task queued behind `after` is claimed once that one ended; a task whose
    # `superseded_by` is set stops at its next stage boundary and hands over (issue 13 item 3)
    after: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    superseded_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created: Mapped[datetime]
    updated: Mapped[datetime]


class Project(Base):
    """An application (spec §10.4): a Compose template deployed as a Swarm stack on one cluster."""

    __tablename__ = "projects"
    cluster_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[str] = mapped_column(String(128), default="1.0")
    template: Mapped[str] = mapped_column(Text)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    latest_image: Mapped[bool] = mapped_column(Boolean, default=False)
    # running | stopped | deleted (target) / creating, updating, starting, ... running, failed (actual)
    desired_state: Mapped[str] = mapped_column(String(32), default="running")
    current_state: Mapped[str] = mapped_column(String(32), default="creating")
    task_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the last operation's task
    # the release before the last update (rollback target; blue-green keeps both sides)
    previous_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    previous_template: Mapped[str | None] = mapped_column(Text, nullable=True)
    # scale overrides, stopped services, pinned images, last error, the blue-green release ...
    state: Mapped[ProjectState] = mapped_column(ProjectStateType, default=ProjectState)
    created: Mapped[datetime]
    updated: Mapped[datetime]


class AppVolume(Base):
    """A cluster data volume created with POST /volumes/create (spec §10.25); secrets encrypted."""

    __tablename__ = "app_volumes"
    cluster_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    driver: Mapped[str] = mapped_column(String(32))  # local | nas | ossfs
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # without secrets
    secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)  # SecretBox token of a JSON object
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime]


class Trigger(Base):
    """A pre-authorised URL that redeploys a project or scales one of its services (spec §11).
    Only hashes of secrets are kept; a rotated secret keeps working until `previous_until`."""

    __tablename__ = "triggers"
    trigger_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    project: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # redeploy | scaling
    service: Mapped[str] = mapped_column(String(128), default="")
    image_update: Mapped[bool] = mapped_column(Boolean, default=False)
    token: Mapped[str] = mapped_column(String(255), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_until: Mapped[datetime | None] = mapped_column(nullable=True)
    # a signed trigger also needs a Standard Webhooks signature (HMAC-SHA256, key kept encrypted)
    signed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    signing_secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_signing_secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_invoked: Mapped[datetime | None] = mapped_column(nullable=True)
    created: Mapped[datetime]


class AttachToken(Base):
    """The single-use token of an attach script (POST /clusters/{id}/attachscript, spec §6.10): the
    machine that runs the script within `expires` joins the cluster. Only its hash is kept."""

    __tablename__ = "attach_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime]
    expires: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    instance_id: Mapped[str] = mapped_column(String(40), default="")  # the machine that used it
    task_id: Mapped[str] = mapped_column(String(40), default="")


class AlertRule(Base):
    """A scaling rule attached to a service (issue 12): `cpu > out_above % for out_for s -> scale
    out by out_step` and `< in_below % for in_for s -> scale in by in_step`, within min..max
    replicas. It calls its own scaling trigger, whose secret is kept here encrypted (the trigger row
    keeps only its hash) so that the rendered Alertmanager receiver can be written again."""

    __tablename__ = "alert_rules"
    rule_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    project: Mapped[str] = mapped_column(String(64))
    service: Mapped[str] = mapped_column(String(128))
    trigger_id: Mapped[str] = mapped_column(String(40))
    secret_enc: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # thresholds, durations, steps, bounds
    created: Mapped[datetime]


class Event(Base):
    """Something that happened to a cluster or one of its projects (issue 12 item 4): a task's
    stage, a node's health, a container's death, a scaling decision and its cause. Kept for a
    bounded time (opencs.services.events prunes)."""

    __tablename__ = "events"
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(String(40), index=True)
    project: Mapped[str] = mapped_column(String(64), default="")
    kind: Mapped[str] = mapped_column(String(16))  # task | node | container | scaling
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(index=True)


class Lease(Base):
    """Who holds a singleton duty of the control plane (issue 13 item 2: the endpoint manager, the
    router, the monitors) until when. `token` grows by one on every change of holder: the fencing
    token each side effect of the duty checks, so a holder that lost the lease (stalled, partitioned)
    can no longer act on the world even if it does not know yet."""

    __tablename__ = "leases"
    duty: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), default="")  # host:pid:nonce, "" when released
    token: Mapped[int] = mapped_column(Integer, default=0)
    expires: Mapped[float] = mapped_column(Float, default=0.0)  # unix time, like tasks' lease_until
    passed: Mapped[float] = mapped_column(Float, default=0.0)  # when the holder last finished a pass
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the holder's host, pid, API URL
    acquired: Mapped[datetime]
