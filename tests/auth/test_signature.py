"""Pure signature functions: the spec's corrected test vector and the client variants."""

from opencs.auth import signature as sig

SPEC_BODY = (
    b'{"password": "Just$test","instance_type": "ecs.m2.medium","name": "my-test-cluster-97082734",'
    b'"size": 1,"network_mode": "classic","data_disk_category": "cloud","data_disk_size": 10,'
    b'"ecs_image_id": "m-253llee3l"}'
)
SPEC_HEADERS = {
    "accept": "application/json",
    "content-md5": "6U4ALMkKSj0PYbeQSHqgmA==",
    "content-type": "application/json;charset=utf-8",
    "date": "Wed, 16 Dec 2015 12:20:18 GMT",
    "x-acs-version": "2015-12-15",
    "x-acs-signature-nonce": "fbf6909a-93a5-45d3-8b1c-3e03a7916799",
    "x-acs-signature-version": "1.0",
    "x-acs-signature-method": "HMAC-SHA1",
    "x-acs-region-id": "cn-beijing",
}


def test_spec_content_md5_and_length():
    assert len(SPEC_BODY) == 210
    assert sig.content_md5(SPEC_BODY) == "6U4ALMkKSj0PYbeQSHqgmA=="


def test_spec_string_to_sign_and_corrected_vector():
    resource = sig.roa_canonical_resource("/clusters", [("param2", "value2"), ("param1", "value1")])
    assert resource == "/clusters?param1=value1&param2=value2" and len(resource) == 37
    sts = sig.roa_string_to_sign("POST", SPEC_HEADERS, resource)
    assert len(sts) == 317
    assert sts.endswith("x-acs-version:2015-12-15\n/clusters?param1=value1&param2=value2")
    assert sig.roa_signature("access_key_secret", sts) == "pFd8Rd58Fv0jJRUptdqrOB3YS8M="


def test_spec_published_signature_is_not_accepted():
    # the seed's published value is Base64 of hex text of an unreproducible HMAC (spec §3.5)
    resource = "/clusters?param1=value1&param2=value2"
    sts = sig.roa_string_to_sign("POST", SPEC_HEADERS, resource)
    assert sig.roa_signature("access_key_secret", sts) != "ZmVlMDNkNDA1ZTQyMWViYWY1MTRhZGVjODgxMDM4YzRiMzEzNTg0ZA=="


def test_empty_value_forms():
    assert sig.roa_canonical_resource("/x", [("b", ""), ("a", "1")]) == "/x?a=1&b="
    assert sig.roa_canonical_resource("/x", [("b", ""), ("a", "1")], empty_as_bare=True) == "/x?a=1&b"
    cands = sig.roa_candidate_resources("/x", "/x", [])
    assert "/x" in cands and "/x?" in cands


def test_parse_authorization():
    p = sig.parse_authorization("acs LTAIabc:pFd8Rd58Fv0jJRUptdqrOB3YS8M=")
    assert (p.scheme, p.access_key_id, p.signature) == ("acs", "LTAIabc", "pFd8Rd58Fv0jJRUptdqrOB3YS8M=")
    p = sig.parse_authorization(
        "ACS3-HMAC-SHA256 Credential=AK1,SignedHeaders=host;x-acs-date;X-Acs-Version,Signature=ab12"
    )
    assert p.scheme == sig.ACS3 and p.signed_headers == ("host", "x-acs-date", "x-acs-version")
    for bad in ("", "Bearer x", "acs nocolon", "acs :sig", "ACS3-HMAC-SHA256 Credential=AK", "ACS3-HMAC-SHA256 junk"):
        try:
            sig.parse_authorization(bad)
        except sig.MalformedAuthorization:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_acs3_canonical_request_shape():
    headers = {"host": "127.0.0.1:1", "x-acs-date": "2026-01-01T00:00:00Z", "x-acs-content-sha256": "e3"}
    canon = sig.acs3_canonical_request("GET", "/clusters", [("b", "a b"), ("a", "~x")], headers,
                                       ["x-acs-date", "host", "x-acs-content-sha256"], "e3")
    assert canon == (
        "GET\n/clusters\na=~x&b=a%20b\nhost:127.0.0.1:1\nx-acs-content-sha256:e3\n"
        "x-acs-date:2026-01-01T00:00:00Z\n\nhost;x-acs-content-sha256;x-acs-date\ne3"
    )


def test_sign_headers_roundtrip_both_schemes():
    for scheme in (sig.ROA, sig.ACS3):
        h = {"host": "h", "date": "Wed, 16 Dec 2015 12:20:18 GMT", "x-acs-date": "2015-12-16T12:20:18Z",
             "content-type": "application/json", "accept": "application/json"}
        sig.sign_headers(method="POST", path="/clusters", query=[("a", "1")], headers=h, body=b"{}",
                         access_key_id="AK", secret="S", scheme=scheme)
        parsed = sig.parse_authorization(h["authorization"])
        assert parsed.access_key_id == "AK"
        if scheme == sig.ROA:
            sts = sig.roa_string_to_sign("POST", h, "/clusters?a=1")
            assert sig.roa_signature("S", sts) == parsed.signature
        else:
            canon = sig.acs3_canonical_request("POST", "/clusters", [("a", "1")], h, list(parsed.signed_headers),
                                               sig.sha256_hex(b"{}"))
            assert sig.acs3_signature("S", canon) == parsed.signature
