"""Per-user client certificates of a cluster (GET /clusters/{id}/certs), their revocation, and who a
certificate presented to master_url belongs to.

Each call of GET /certs issues a new certificate for the calling user, named in its subject (O=opencs,
OU=account <id>, CN=<user>, UID=<AccessKey id>) and recorded by serial with its expiry. master_url
accepts a certificate while it is recorded, unexpired and unrevoked, its user exists and the AccessKey
it was obtained with is still active; anything else is refused on the next connection (or request).

Two CAs sign them. An account owner's certificate comes from the cluster CA, which the node engines
(tcp://IP:2376) trust too; a sub-user's from a second CA of the cluster that only master_url trusts.
The node engines cannot ask opencs about revocation, so keeping sub-users' certificates off the CA they
trust is what keeps sub-users to master_url, where every call is checked against their policies.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from opencs.engines.driver import ClusterDriver, ClusterPKI, DriverError
from opencs.errors import ApiError, BadRequest, Conflict, NotFound
from opencs.pki.ca import CertAuthority, not_after, serial_hex
from opencs.secretbox import SecretBox
from opencs.services.accounts import AccountService, Principal
from opencs.store.db import utcnow
from opencs.store.repos.certs import CertRecord, CertRepo

DEFAULT_DAYS = 365
MAX_LIFETIME = timedelta(days=3650)


class CertificateRefused(ApiError):
    """A client certificate master_url no longer accepts (the code says why)."""

    status = 401
    code = "CertificateRevoked"


class ClusterRows(Protocol):
    def get_row(self, cluster_id: str) -> Any:
        """The live cluster (NotFound otherwise)."""


@dataclass(frozen=True)
class IssuedUserCert:
    ca_pem: str
    cert_pem: str
    key_pem: str
    serial: str
    expires: str
    kubeconfig: str = ""

    def reply(self) -> dict[str, str]:
        """DescribeClusterCerts' {ca, cert, key}, plus the serial (to revoke it by) and the expiry; a
        Kubernetes cluster's also as a kubeconfig (spec §6.11)."""
        out = {"ca": self.ca_pem, "cert": self.cert_pem, "key": self.key_pem, "serial": self.serial,
               "expiration": self.expires}
        return {**out, "config": self.kubeconfig} if self.kubeconfig else out


def _ts(d: Any) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else ""


class ClusterCertService:
    def __init__(self, repo: CertRepo, clusters: ClusterRows, accounts: AccountService, box: SecretBox,
                 driver: ClusterDriver, default_days: int = DEFAULT_DAYS) -> None:
        self.repo = repo
        self.clusters = clusters
        self.accounts = accounts
        self.box = box
        self.driver = driver
        self.default_lifetime = timedelta(days=default_days)

    # ------------------------------------------------------------ issuing

    def issue(self, cluster_id: str, who: Principal | None = None,
              lifetime: timedelta | None = None) -> IssuedUserCert:
        """A new certificate for `who` (None: the cluster's account owner, e.g. the operator's CLI)."""
        c = self.clusters.get_row(cluster_id)
        if not (c.ca_cert_pem and c.ca_key_enc):
            raise NotFound(f"Cluster {cluster_id} has no certificates", code="ErrorCertsNotFound")
        life = lifetime or self.default_lifetime
        if not timedelta(0) < life <= MAX_LIFETIME:
            raise ValueError(f"certificate lifetime {life} out of range")
        who = who or self._owner(cluster_id, c.account_id)
        ca = self._signer(cluster_id, c.ca_cert_pem, c.ca_key_enc, who.is_owner)
        issued = ca.issue_client(who.user_name, lifetime=life, org_unit=f"account {who.account_id}",
                                 uid=who.access_key_id)
        expires = self._record(cluster_id, who, issued.cert_pem)
        serial = serial_hex(issued.cert_pem)
        # the CA in the reply verifies master_url's server certificate: always the cluster CA
        cred = self.driver.credentials(ClusterPKI(cluster_id, c.ca_cert_pem, "", c.master_url or ""),
                                       issued.cert_pem, issued.key_pem)
        return IssuedUserCert(cred.ca_pem, cred.cert_pem, cred.key_pem, serial, _ts(expires), cred.kubeconfig)

    def issue_kubeconfig(self, cluster_id: str, who: Principal | None, minutes: int | None) -> dict[str, str]:
        """GET /k8s/{id}/user_config (spec §6.8): a kubeconfig for `who` whose certificate is recorded
        like any other (revocable), naming the user `<account>:<user>` and, for the account's owner,
        the group system:masters (cluster-admin); a RAM user gets no rights until the cluster's RBAC
        grants some (as in ACK). Its server is master_url, the endpoint that checks revocation."""
        c = self.clusters.get_row(cluster_id)
        if c.state in ("launching", "failed", "deleting") or not (c.ca_cert_pem and c.ca_key_enc):
            raise Conflict(f"Cluster {cluster_id} is {c.state}: its apiserver has no endpoint yet",
                           code="ErrorClusterStateConflict")
        who = who or self._owner(cluster_id, c.account_id)
        life = timedelta(minutes=minutes) if minutes else self.default_lifetime
        ca = self._signer(cluster_id, c.ca_cert_pem, c.ca_key_enc, who.is_owner)
        issued = ca.issue_client(f"{who.account_id}:{who.user_name}", lifetime=life, rsa=False,
                                 org_unit=f"account {who.account_id}", uid=who.access_key_id,
                                 orgs=["system:masters"] if who.is_owner else [])
        try:
            cred = self.driver.credentials(ClusterPKI(cluster_id, c.ca_cert_pem, "", c.master_url or ""),
                                           issued.cert_pem, issued.key_pem)
        except DriverError as e:
            raise BadRequest(e.message, code=e.code) from None
        if cred.kind != "kubeconfig":  # the certificate is dropped unrecorded: nobody saw it
            raise BadRequest(f"Cluster {cluster_id} is no Kubernetes cluster: use GET /clusters/{{id}}/certs",
                             code="ErrorClusterTypeMismatch")
        return {"config": cred.kubeconfig, "expiration": _ts(self._record(cluster_id, who, issued.cert_pem))}

    def _owner(self, cluster_id: str, account_id: str) -> Principal:
        owner = self.accounts.owner(account_id)
        if owner is None:
            raise NotFound(f"Cluster {cluster_id}'s account has no owner", code="ErrorCertsNotFound")
        return Principal("", account_id, owner.user_id, owner.user_name, True, ())

    def _record(self, cluster_id: str, who: Principal, cert_pem: str) -> Any:
        serial, expires = serial_hex(cert_pem), not_after(cert_pem).replace(tzinfo=None)
        self.repo.add(CertRecord(serial, cluster_id, who.account_id, who.user_id, who.user_name, who.access_key_id,
                                 utcnow(), expires))
        return expires

    def _signer(self, cluster_id: str, ca_pem: str, ca_key_enc: str, owner: bool) -> CertAuthority:
        if owner:
            return CertAuthority(cert_pem=ca_pem, key_pem=self.box.decrypt(ca_key_enc))
        pem, key_enc = self._user_ca(cluster_id)
        return CertAuthority(cert_pem=pem, key_pem=self.box.decrypt(key_enc))

    def _user_ca(self, cluster_id: str) -> tuple[str, str]:
        def make() -> tuple[str, str]:
            ca = CertAuthority.create(f"opencs cluster {cluster_id} users")
            return ca.cert_pem, self.box.encrypt(ca.key_pem)

        got = self.repo.user_ca(cluster_id, make)
        if got is None:
            raise NotFound(f"Cluster {cluster_id} not found", code="ErrorClusterNotFound")
        return got

    def cluster_ca(self, cluster_id: str) -> tuple[str, str]:
        """The cluster CA's certificate and key (the kubeconfig endpoint derives its front-proxy CA)."""
        ca = self.repo.cluster_ca(cluster_id)
        if ca is None:
            raise LookupError(f"cluster {cluster_id} has no CA")
        return ca.ca_cert_pem, self.box.decrypt(ca.ca_key_enc)

    def client_cas(self, cluster_id: str) -> builtins.list[str]:
        """The CAs master_url verifies client certificates with: the cluster CA and the sub-users' CA."""
        ca = self.repo.cluster_ca(cluster_id)
        if ca is None:
            raise LookupError(f"cluster {cluster_id} has no CA")
        return [ca.ca_cert_pem, self._user_ca(cluster_id)[0]]

    # ------------------------------------------------------------ revoking and listing

    def revoke(self, cluster_id: str, serial: str, by: Principal | None = None) -> dict[str, Any]:
        self.clusters.get_row(cluster_id)
        rec = self.repo.get(serial)
        if rec is None or rec.cluster_id != cluster_id:
            raise NotFound(f"Cluster {cluster_id} has no certificate with serial {serial}",
                           code="ErrorCertNotFound")
        self.repo.revoke([rec.serial], (by.access_key_id or by.user_name) if by else "operator")
        fresh = self.repo.get(rec.serial)
        assert fresh is not None
        return self.view(fresh)

    def revoke_mine(self, cluster_id: str, who: Principal) -> builtins.list[str]:
        """RevokeK8sClusterKubeConfig's meaning for Swarm: every certificate of the caller on the cluster."""
        self.clusters.get_row(cluster_id)
        mine = [r.serial for r in self.repo.of_cluster(cluster_id) if r.user_id == who.user_id]
        return self.repo.revoke(mine, who.access_key_id or who.user_name)

    def states(self, cluster_id: str, who: Principal | None = None) -> builtins.list[dict[str, Any]]:
        """The cluster's certificates (a sub-user: its own) with their state."""
        self.clusters.get_row(cluster_id)
        rows = self.repo.of_cluster(cluster_id)
        if who is not None and not who.is_owner:
            rows = [r for r in rows if r.user_id == who.user_id]
        return [self.view(r) for r in rows]

    def view(self, r: CertRecord) -> dict[str, Any]:
        state = ("revoked" if r.revoked_at else "expired" if r.not_after <= utcnow() else "valid")
        return {"serial": r.serial, "cluster_id": r.cluster_id, "user_id": r.user_id, "user_name": r.user_name,
                "access_key_id": r.access_key_id, "created": _ts(r.created), "expiration": _ts(r.not_after),
                "state": state, "revoked": _ts(r.revoked_at) or None}

    # ------------------------------------------------------------ master_url: who presents a certificate

    def identify(self, cluster_id: str, serial: str) -> Principal:
        """The principal behind a client certificate master_url's TLS layer verified, or
        CertificateRefused saying why it no longer counts."""
        h = self.repo.holder(serial)
        if h is None or h.cert.cluster_id != cluster_id:
            raise CertificateRefused(f"certificate {serial} was not issued by opencs for cluster {cluster_id}",
                                     code="CertificateUnknown")
        rec = h.cert
        if rec.revoked_at is not None:
            raise CertificateRefused(f"certificate {serial} was revoked at {_ts(rec.revoked_at)}")
        if rec.not_after <= utcnow():
            raise CertificateRefused(f"certificate {serial} expired at {_ts(rec.not_after)}",
                                     code="CertificateExpired")
        if not h.user_exists:
            raise CertificateRefused(f"the user of certificate {serial} was deleted", code="CertificateUserDeleted")
        if not rec.access_key_id:
            if h.is_owner:
                return Principal("", rec.account_id, rec.user_id, rec.user_name, True, ())
            # issued in a console session signed in with a password: it counts while that logon exists
            who = self.accounts.principal_of_user(rec.user_id) if h.has_login_profile else None
            if who is None:
                raise CertificateRefused(f"the login profile of the user of certificate {serial} was deleted",
                                         code="CertificateKeyInactive")
            return who
        if h.key_status != "active":
            what = "deleted" if h.key_status is None else "disabled"
            raise CertificateRefused(f"the AccessKey {rec.access_key_id} of certificate {serial} was {what}",
                                     code="CertificateKeyInactive")
        p = self.accounts.principal(rec.access_key_id)
        if p is None or p.user_id != rec.user_id:
            raise CertificateRefused(f"the AccessKey of certificate {serial} belongs to no user",
                                     code="CertificateKeyInactive")
        return p
