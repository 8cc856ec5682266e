"""The audit trail: every mutating call on record (who, what, when, from where, RequestId, outcome).

Entries are append-only and chained: hash = SHA-256(prev_hash + the entry's fields), so editing a
row breaks its own hash and deleting one breaks the sequence or the next entry's prev_hash;
`verify()` names the first entry that does not hold. (Deleting the newest entries leaves a shorter
valid chain: keep a copy of the head hash elsewhere to detect that.)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from opencs.services.accounts import Principal
from opencs.store.db import utcnow
from opencs.store.repos.audit import AuditRecord, AuditRepo

log = logging.getLogger("opencs.audit")


def entry_hash(seq: int, at: datetime, account_id: str, user_name: str, access_key_id: str, action: str,
               resource: str, source: str, request_id: str, outcome: str, prev_hash: str) -> str:
    fields = [seq, at.strftime("%Y-%m-%dT%H:%M:%S.%f"), account_id, user_name, access_key_id, action, resource,
              source, request_id, outcome]
    return hashlib.sha256((prev_hash + json.dumps(fields, separators=(",", ":"))).encode()).hexdigest()


def _hash_of(r: AuditRecord) -> str:
    return entry_hash(r.seq, r.at, r.account_id, r.user_name, r.access_key_id, r.action, r.resource, r.source,
                      r.request_id, r.outcome, r.prev_hash)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    problem: str = ""
    seq: int | None = None


class AuditService:
    def __init__(self, repo: AuditRepo) -> None:
        self.repo = repo

    def record(self, who: Principal | None, action: str, resource: str, source: str, request_id: str,
               outcome: str) -> None:
        """Append one entry; a failure to write it is logged, never turned into the caller's error."""
        at = utcnow()
        acct, user, ak = (who.account_id, who.user_name, who.access_key_id) if who else ("", "", "")

        def make(seq: int, prev: str) -> AuditRecord:
            h = entry_hash(seq, at, acct, user, ak, action, resource[:512], source, request_id, outcome, prev)
            return AuditRecord(seq, at, acct, user, ak, action, resource[:512], source, request_id, outcome, prev, h)

        try:
            self.repo.append(make)
        except Exception:
            log.exception("could not append the audit entry of request %s", request_id)

    def query(self, account_id: str | None, action: str | None = None, user_name: str | None = None,
              since: datetime | None = None, limit: int = 100) -> list[AuditRecord]:
        return self.repo.query(account_id, action, user_name, since, min(max(limit, 1), 1000))

    def verify(self) -> VerifyResult:
        prev, expected, n = AuditRepo.GENESIS, 1, 0
        for r in self.repo.all():
            if r.seq != expected:
                return VerifyResult(False, n, f"entries {expected}..{r.seq - 1} are missing (deleted)", expected)
            if r.prev_hash != prev:
                return VerifyResult(False, n, f"entry {r.seq} does not chain onto entry {r.seq - 1}", r.seq)
            if _hash_of(r) != r.hash:
                return VerifyResult(False, n, f"entry {r.seq} was edited (its hash does not match its fields)",
                                    r.seq)
            prev, expected, n = r.hash, expected + 1, n + 1
        return VerifyResult(True, n)


def record_json(r: AuditRecord) -> dict[str, object]:
    return {"seq": r.seq, "time": r.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "account_id": r.account_id,
            "user_name": r.user_name, "access_key_id": r.access_key_id, "action": r.action, "resource": r.resource,
            "source": r.source, "request_id": r.request_id, "outcome": r.outcome, "hash": r.hash}
