"""RAM actions: parameters in, the reply shapes of the real RAM API out (field names as the SDK models read).

Every action works inside the caller's account; a sub-user needs `ram:<Action>` on the resource
(`acs:ram:*:<account>:user/<name>` or `.../policy/<name>`), the owner may do everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from opencs.errors import ApiError, BadRequest
from opencs.services.accounts import AccountService, Principal
from opencs.services.keys import KeyInfo
from opencs.services.login_profiles import LoginProfiles, flag
from opencs.services.policies import decide
from opencs.store.repos.accounts import PolicyRecord, UserRecord
from opencs.store.repos.login_profiles import LoginProfileRecord

Params = Mapping[str, str]


class RamServices(Protocol):
    @property
    def accounts(self) -> AccountService: ...

    @property
    def login_profiles(self) -> LoginProfiles: ...


Handler = Callable[[RamServices, Principal, Params], dict[str, Any]]


class NoPermission(ApiError):
    status = 403
    code = "NoPermission"


def _ts(d: datetime | None) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else ""


def _need(p: Params, name: str) -> str:
    v = p.get(name)
    if not v:
        raise BadRequest(f"{name} is mandatory for this action.", code=f"MissingParameter.{name}")
    return v


def _user(u: UserRecord) -> dict[str, Any]:
    return {"UserId": u.user_id, "UserName": u.user_name, "DisplayName": u.display_name, "Comments": u.comments,
            "CreateDate": _ts(u.created), "UpdateDate": _ts(u.updated), "MobilePhone": "", "Email": ""}


def _key(k: KeyInfo) -> dict[str, Any]:
    return {"AccessKeyId": k.access_key_id, "Status": "Active" if k.status == "active" else "Inactive",
            "CreateDate": _ts(k.created)}


def _policy(p: PolicyRecord) -> dict[str, Any]:
    return {"PolicyName": p.policy_name, "PolicyType": "Custom", "Description": p.description,
            "DefaultVersion": "v1", "CreateDate": _ts(p.created), "UpdateDate": _ts(p.updated),
            "AttachmentCount": p.attachments}


def _policy_type(p: Params) -> None:
    if p.get("PolicyType", "Custom") != "Custom":
        raise BadRequest("only Custom policies exist on opencs", code="InvalidParameter.PolicyType")


def _target_user(svc: RamServices, who: Principal, p: Params) -> str:
    """UserName, or the caller when it is left out (CreateAccessKey, ListAccessKeys ... of oneself)."""
    return p.get("UserName") or who.user_name


def create_user(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    u = svc.accounts.create_user(who.account_id, _need(p, "UserName"), p.get("DisplayName", ""), p.get("Comments", ""))
    return {"User": _user(u)}


def get_user(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    u = svc.accounts.user(who.account_id, _need(p, "UserName"))
    return {"User": {**_user(u), "LastLoginDate": _ts(u.last_login) if u.last_login else ""}}


def list_users(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    users = svc.accounts.users(who.account_id)
    return {"IsTruncated": False, "Marker": "", "Users": {"User": [_user(u) for u in users]}}


def delete_user(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    svc.accounts.delete_user(who.account_id, _need(p, "UserName"))
    return {}


def create_access_key(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    info, secret = svc.accounts.create_key(who.account_id, _target_user(svc, who, p))
    return {"AccessKey": {**_key(info), "AccessKeySecret": secret}}


def list_access_keys(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    keys = svc.accounts.user_keys(who.account_id, _target_user(svc, who, p))
    return {"AccessKeys": {"AccessKey": [_key(k) for k in keys]}}


def update_access_key(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    status = _need(p, "Status")
    if status not in ("Active", "Inactive"):
        raise BadRequest("Status must be Active or Inactive", code="InvalidParameter.Status")
    svc.accounts.set_key_status(who.account_id, _target_user(svc, who, p), _need(p, "UserAccessKeyId"),
                                status == "Active")
    return {}


def delete_access_key(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    svc.accounts.delete_key(who.account_id, _target_user(svc, who, p), _need(p, "UserAccessKeyId"))
    return {}


def create_policy(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    rec = svc.accounts.create_policy(who.account_id, _need(p, "PolicyName"), _need(p, "PolicyDocument"),
                                     p.get("Description", ""))
    return {"Policy": {k: v for k, v in _policy(rec).items() if k not in ("UpdateDate", "AttachmentCount")}}


def get_policy(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    _policy_type(p)
    rec = svc.accounts.policy(who.account_id, _need(p, "PolicyName"))
    return {"Policy": {**_policy(rec), "PolicyDocument": rec.document},
            "DefaultPolicyVersion": {"VersionId": "v1", "IsDefaultVersion": True, "CreateDate": _ts(rec.created),
                                     "PolicyDocument": rec.document}}


def list_policies(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    if p.get("PolicyType", "Custom") == "System":
        recs: list[PolicyRecord] = []
    else:
        recs = svc.accounts.policies(who.account_id)
    return {"IsTruncated": False, "Marker": "", "Policies": {"Policy": [_policy(r) for r in recs]}}


def delete_policy(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    svc.accounts.delete_policy(who.account_id, _need(p, "PolicyName"))
    return {}


def attach_policy(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    _policy_type(p)
    svc.accounts.attach(who.account_id, _need(p, "UserName"), _need(p, "PolicyName"))
    return {}


def detach_policy(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    _policy_type(p)
    svc.accounts.detach(who.account_id, _need(p, "UserName"), _need(p, "PolicyName"))
    return {}


def list_policies_for_user(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    rows = svc.accounts.user_policies(who.account_id, _need(p, "UserName"))
    return {"Policies": {"Policy": [{"PolicyName": r.policy_name, "PolicyType": "Custom", "Description": r.description,
                                     "DefaultVersion": "v1", "AttachDate": _ts(at)} for r, at in rows]}}

def _login_profile(u: UserRecord, rec: LoginProfileRecord) -> dict[str, Any]:
    """A login profile as RAM shows it (never the password)."""
    return {"UserName": u.user_name, "PasswordResetRequired": rec.password_reset_required,
            "MFABindRequired": rec.mfa_bind_required, "CreateDate": _ts(rec.created)}


def create_login_profile(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    u, rec = svc.login_profiles.create(who.account_id, _need(p, "UserName"), _need(p, "Password"),
                                       flag(p, "PasswordResetRequired"), flag(p, "MFABindRequired"))
    return {"LoginProfile": _login_profile(u, rec)}


def get_login_profile(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    return {"LoginProfile": _login_profile(*svc.login_profiles.get(who.account_id, _need(p, "UserName")))}


def update_login_profile(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    svc.login_profiles.update(who.account_id, _need(p, "UserName"), p.get("Password") or None,
                              flag(p, "PasswordResetRequired"), flag(p, "MFABindRequired"))
    return {}


def delete_login_profile(svc: RamServices, who: Principal, p: Params) -> dict[str, Any]:
    svc.login_profiles.delete(who.account_id, _need(p, "UserName"))
    return {}


# action -> (handler, the resource kind it acts on, whether it changes something)
ACTIONS: dict[str, tuple[Handler, str, bool]] = {
    "CreateUser": (create_user, "user", True),
    "GetUser": (get_user, "user", False),
    "ListUsers": (list_users, "", False),
    "DeleteUser": (delete_user, "user", True),
    "CreateAccessKey": (create_access_key, "user", True),
    "ListAccessKeys": (list_access_keys, "user", False),
    "UpdateAccessKey": (update_access_key, "user", True),
    "DeleteAccessKey": (delete_access_key, "user", True),
    "CreatePolicy": (create_policy, "policy", True),
    "GetPolicy": (get_policy, "policy", False),
    "ListPolicies": (list_policies, "", False),
    "DeletePolicy": (delete_policy, "policy", True),
    "AttachPolicyToUser": (attach_policy, "user", True),
    "DetachPolicyFromUser": (detach_policy, "user", True),
    "ListPoliciesForUser": (list_policies_for_user, "user", False),
    "CreateLoginProfile": (create_login_profile, "user", True),
    "GetLoginProfile": (get_login_profile, "user", False),
    "UpdateLoginProfile": (update_login_profile, "user", True),
    "DeleteLoginProfile": (delete_login_profile, "user", True),
}


def resource(action: str, who: Principal, p: Params) -> str:
    kind = ACTIONS[action][1]
    if kind == "user":
        return f"acs:ram:*:{who.account_id}:user/{p.get('UserName') or who.user_name}"
    if kind == "policy":
        return f"acs:ram:*:{who.account_id}:policy/{p.get('PolicyName', '')}"
    return f"acs:ram:*:{who.account_id}:*"


def run(svc: RamServices, who: Principal, action: str, p: Params, context: Mapping[str, str]) -> dict[str, Any]:
    entry = ACTIONS.get(action)
    if entry is None:
        raise BadRequest(f"The specified action {action!r} is not supported by opencs's RAM API",
                         code="InvalidAction.NotFound", status=404)
    if not who.is_owner and not decide(who.statements, (f"ram:{action}",), resource(action, who, p), context):
        raise NoPermission("You are not authorized to do this action. You should be authorized by RAM.")
    return entry[0](svc, who, p)
