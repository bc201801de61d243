"""The one credential scrubber and the one terminal escaper (cloudtaser.sanitize)."""

from __future__ import annotations

import pytest

from cloudtaser.errors import ClusterUnreachableError
from cloudtaser.sanitize import has_control_chars, printable, scrub_credentials, shown
from cloudtaser.target.kube.errors import api_errors

JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IkNBTkFSWSJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0."
    "c2lnbmF0dXJlLWNhbmFyeS1zaWduYXR1cmUtY2FuYXJ5"
)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"Illegal header value b'Bearer {JWT}\\n'", JWT),
        ("Illegal header value b'Bearer not-a-jwt-but-secret-123\\n'", "not-a-jwt-but-secret-123"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("X-Vault-Token: s.AbCdEfGhIjKlMnOpQrStUvWx", "s.AbCdEfGhIjKlMnOpQrStUvWx"),
        ("got hvs.CAESIJ1xyzxyzxyzxyzxyzxyzxyz from", "hvs.CAESIJ1xyzxyzxyzxyzxyzxyzxyz"),
        ('{"client_token": "opaque-canary-value"}', "opaque-canary-value"),
        ("jwt=opaque-canary-value&role=x", "opaque-canary-value"),
        (f"a bare token {JWT} in prose", JWT),
    ],
)
def test_credentials_are_scrubbed(text: str, gone: str) -> None:
    out = scrub_credentials(text)
    assert gone not in out
    assert "<redacted>" in out


def test_exact_secret_is_scrubbed_in_plain_and_escaped_form() -> None:
    secret = "opaque\nvalue-42"
    out = scrub_credentials(f"x {secret} y {secret!r}", secrets=[secret])
    assert "opaque" not in out
    assert "value-42" not in out


def test_harmless_text_is_kept() -> None:
    text = "cannot list deployments.apps: the token lacks capability 'read' on secret/data/x"
    assert scrub_credentials(text) == text


def test_api_errors_never_copies_a_quoted_bearer_token() -> None:
    import httpx2

    with pytest.raises(ClusterUnreachableError) as caught, api_errors("list deployments"):
        raise httpx2.LocalProtocolError(f"Illegal header value b'Bearer {JWT}\\n'")
    assert JWT not in str(caught.value)
    assert JWT[:30] not in str(caught.value)
    assert "Illegal header value" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b]0;pwned\x07title", "\\x1b]0;pwned\\x07title"),
        ("\x1b[2Jclear", "\\x1b[2Jclear"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("nul\x00byte", "nul\\x00byte"),
        ("c1\x9bcsi", "c1\\x9bcsi"),
        ("two\nlines", "two\\nlines"),
    ],
)
def test_printable_escapes_control_and_format_characters(raw: str, expected: str) -> None:
    assert printable(raw) == expected
    assert not has_control_chars(printable(raw))


def test_printable_caps_the_length() -> None:
    out = printable("x" * 100_000, limit=50)
    assert out.startswith("x" * 50)
    assert len(out) < 120
    assert "99950 more characters not shown" in out


def test_shown_scrubs_then_escapes() -> None:
    assert shown(f"\x1b[31mBearer {JWT}") == "\\x1b[31mBearer <redacted>"
