"""Request signatures of the Container Service API: pure functions, shared by server and clients.

Two schemes (see shared/notes/CLIENT-COMPAT.md):

* ROA ``acs AK:base64(HMAC-SHA1(secret, StringToSign))`` (spec §3.4) — aliyun-python-sdk-core,
  the Tea SDK with ``signature_algorithm="v2"`` and the aliyun CLI.
* ``ACS3-HMAC-SHA256`` — what today's Tea SDK sends by default.

The clients disagree on small details (``k=`` vs ``k`` for empty values, raw vs percent-encoded
path, a bare trailing ``?``), so the verifier builds the few canonical forms real clients produce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

ROA = "acs"
ACS3 = "ACS3-HMAC-SHA256"

QueryPairs = list[tuple[str, str]]


def content_md5(body: bytes) -> str:
    """base64 of the raw 16-byte MD5 digest (spec §3.4, not the hex text)."""
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------- ROA (HMAC-SHA1)


def roa_canonical_headers(headers: Mapping[str, str]) -> str:
    """Every x-acs-* header as "name:value\\n", names lower-cased and sorted."""
    items = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-acs-"))
    return "".join(f"{k}:{v}\n" for k, v in items)


def roa_canonical_resource(path: str, query: Iterable[tuple[str, str]], empty_as_bare: bool = False) -> str:
    """path[?k=v&...]: keys sorted, values not url-encoded. sdk-core writes an empty value as
    "k=", the Tea SDK as "k" (``empty_as_bare``)."""
    pairs = sorted(query, key=lambda kv: kv[0])
    if not pairs:
        return path
    parts = [k if (v == "" and empty_as_bare) else f"{k}={v}" for k, v in pairs]
    return path + "?" + "&".join(parts)


def roa_string_to_sign(method: str, headers: Mapping[str, str], resource: str) -> str:
    """headers: lower-cased names. Missing Accept/Content-MD5/Content-Type/Date give empty lines."""
    return (
        f"{method.upper()}\n{headers.get('accept', '')}\n{headers.get('content-md5', '')}\n"
        f"{headers.get('content-type', '')}\n{headers.get('date', '')}\n"
        + roa_canonical_headers(headers)
        + resource
    )


def roa_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# ---------------------------------------------------------------- ACS3-HMAC-SHA256


def acs3_canonical_query(query: Iterable[tuple[str, str]]) -> str:
    pairs = sorted(query, key=lambda kv: kv[0])
    return "&".join(f"{k}={quote(v, safe='~')}" for k, v in pairs)


def acs3_canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    """headers: lower-cased names; signed_headers: lower-cased names as the client listed them."""
    names = sorted(signed_headers)
    canon_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in names)
    return (
        f"{method.upper()}\n{path or '/'}\n{acs3_canonical_query(query)}\n"
        f"{canon_headers}\n{';'.join(names)}\n{payload_hash}"
    )


def acs3_signature(secret: str, canonical_request: str) -> str:
    string_to_sign = f"{ACS3}\n{sha256_hex(canonical_request.encode())}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- Authorization header


@dataclass(frozen=True)
class ParsedAuthorization:
    scheme: str  # ROA or ACS3
    access_key_id: str
    signature: str
    signed_headers: tuple[str, ...] = ()


class MalformedAuthorization(ValueError):
    pass


def parse_authorization(value: str) -> ParsedAuthorization:
    value = value.strip()
    if value.startswith(ACS3 + " "):
        fields: dict[str, str] = {}
        for part in value[len(ACS3) + 1 :].split(","):
            k, sep, v = part.strip().partition("=")
            if not sep:
                raise MalformedAuthorization(f"bad {ACS3} field {part.strip()!r}")
            fields[k] = v
        try:
            ak, sig, signed = fields["Credential"], fields["Signature"], fields["SignedHeaders"]
        except KeyError as e:
            raise MalformedAuthorization(f"{ACS3} Authorization lacks {e.args[0]}") from None
        names = tuple(n.strip().lower() for n in signed.split(";") if n.strip())
        if not ak or not sig:
            raise MalformedAuthorization("empty Credential or Signature")
        return ParsedAuthorization(ACS3, ak, sig, names)
    if value.startswith(ROA + " "):
        ak, sep, sig = value[len(ROA) + 1 :].strip().rpartition(":")
        if not sep or not ak or not sig:
            raise MalformedAuthorization("expected 'acs <AccessKeyId>:<Signature>'")
        return ParsedAuthorization(ROA, ak, sig)
    raise MalformedAuthorization("expected 'acs <AccessKeyId>:<Signature>' or 'ACS3-HMAC-SHA256 Credential=…'")


def roa_candidate_resources(raw_path: str, decoded_path: str, query: QueryPairs) -> list[str]:
    """The canonical resources real ROA clients sign for one request, most common first."""
    out: list[str] = []
    for path in dict.fromkeys((decoded_path, raw_path)):
        for bare in (False, True):
            r = roa_canonical_resource(path, query, empty_as_bare=bare)
            if r not in out:
                out.append(r)
        if not query:
            out.append(path + "?")  # the aliyun CLI signs a bare "/path?"
    return out


# ---------------------------------------------------------------- client side


def sign_headers(
    *,
    method: str,
    path: str,
    query: QueryPairs,
    headers: dict[str, str],
    body: bytes,
    access_key_id: str,
    secret: str,
    scheme: str = ROA,
) -> dict[str, str]:
    """Add the Authorization header (and body digests) to ``headers`` (lower-case names) in place.
    The caller has already set date/nonce/version headers; ``path`` is the path as sent."""
    if scheme == ROA:
        if body:
            headers["content-md5"] = content_md5(body)
        resource = roa_canonical_resource(path, query)
        sig = roa_signature(secret, roa_string_to_sign(method, headers, resource))
        headers["authorization"] = f"acs {access_key_id}:{sig}"
    elif scheme == ACS3:
        headers["x-acs-content-sha256"] = sha256_hex(body)
        signed = sorted(
            n for n in headers if n.startswith("x-acs-") or n in ("host", "content-type", "content-md5")
        )
        canon = acs3_canonical_request(method, path, query, headers, signed, headers["x-acs-content-sha256"])
        sig = acs3_signature(secret, canon)
        headers["authorization"] = f"{ACS3} Credential={access_key_id},SignedHeaders={';'.join(signed)},Signature={sig}"
    else:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    return headers
