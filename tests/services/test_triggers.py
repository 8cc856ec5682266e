"""Pure parts of triggers: the spec's token format and image matching."""

import pytest

from opencs.errors import BadRequest
from opencs.services.triggers import image_matches, make_token, parse_token


def test_spec_example_tokens_decode() -> None:
    # spec §11.3, both with and without the stray "=" the seed appends
    tok = "Y2E1Y2UwY2NhOWRhMzQ2ZDY4ZmYyZmYyNGZiYTAyNzdjfHdvcmRwcmVzc3xzY2FsaW5nfDE5dXM1cHZjdjQ4cnN8"
    assert parse_token(tok) == ("ca5ce0cca9da346d68ff2ff24fba0277c", "wordpress", "scaling", "19us5pvcv48rs")
    assert parse_token(tok + "=") == parse_token(tok)


def test_make_token_roundtrip() -> None:
    t = make_token("c" + "0" * 32, "web-app", "redeploy", "abc123")
    assert parse_token(t) == ("c" + "0" * 32, "web-app", "redeploy", "abc123")
    assert parse_token(make_token("c1", "p", "scaling", "x"))[2] == "scaling"


@pytest.mark.parametrize("bad", ["", "!!!", "aGVsbG8=", "YXxifGN8"])
def test_bad_tokens(bad: str) -> None:
    with pytest.raises(BadRequest):
        parse_token(bad)


@pytest.mark.parametrize(
    ("image", "repo", "tag", "ok"),
    [
        ("busybox", "library/busybox", "latest", True),
        ("busybox:latest", "library/busybox", "latest", True),
        ("busybox:1.36", "library/busybox", "latest", False),
        ("10.213.0.1:5000/team/app:v2", "team/app", "v2", True),
        ("localhost:5000/team/app", "team/app", "latest", True),
        ("team/app:v2", "team/app", "v2", True),
        ("team/app@sha256:abc", "team/app", "latest", False),
        ("other/app:v2", "team/app", "v2", False),
    ],
)
def test_image_matches(image: str, repo: str, tag: str, ok: bool) -> None:
    assert image_matches(image, repo, tag) is ok
