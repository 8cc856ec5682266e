"""Per-cluster PKI: CA, engine/API server certs and user client certs."""

from opencs.pki.ca import (
    CertAuthority,
    IssuedCert,
    KeyType,
    fingerprint,
    load_cert,
    not_after,
    verify_chain,
)

__all__ = [
    "CertAuthority",
    "IssuedCert",
    "KeyType",
    "fingerprint",
    "load_cert",
    "not_after",
    "verify_chain",
]
