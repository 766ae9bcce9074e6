"""The gate's own ID-token checks and the authorization error codes it accepts."""

from __future__ import annotations

import pytest

from cdsops.gate.oidc import ERROR_CODES, IdTokenError, check_id_token, error_code, issuers_for, safe_reason

CLIENT = "client-1.apps.googleusercontent.com"
NONCE = "n-0123456789"


@pytest.mark.parametrize("claims", [
    {"aud": CLIENT, "nonce": NONCE},
    {"aud": [CLIENT], "nonce": NONCE},
    {"aud": CLIENT, "azp": CLIENT, "nonce": NONCE},  # Google's tokens
    {"aud": [CLIENT, "other"], "azp": CLIENT, "nonce": NONCE},
])
def test_tokens_issued_to_us_for_this_sign_in_pass(claims):
    check_id_token(claims, client_id=CLIENT, nonce=NONCE)


@pytest.mark.parametrize("claims, error", [
    ({"aud": "someone-else", "azp": CLIENT, "nonce": NONCE}, "invalid_audience"),
    ({"aud": ["someone-else"], "nonce": NONCE}, "invalid_audience"),
    ({"nonce": NONCE}, "invalid_audience"),
    ({"aud": {"x": CLIENT}, "nonce": NONCE}, "invalid_audience"),
    ({"aud": CLIENT + "x", "nonce": NONCE}, "invalid_audience"),
    ({"aud": [CLIENT, "other"], "nonce": NONCE}, "invalid_authorized_party"),
    ({"aud": [CLIENT, "other"], "azp": "other", "nonce": NONCE}, "invalid_authorized_party"),
    ({"aud": CLIENT, "azp": "other", "nonce": NONCE}, "invalid_authorized_party"),
    ({"aud": CLIENT}, "invalid_nonce"),
    ({"aud": CLIENT, "nonce": "other"}, "invalid_nonce"),
    ({"aud": CLIENT, "nonce": None, "nonce_supported": False}, "invalid_nonce"),
    ({"aud": CLIENT, "nonce": 12}, "invalid_nonce"),
])
def test_tokens_for_another_client_or_sign_in_are_refused(claims, error):
    with pytest.raises(IdTokenError) as exc:
        check_id_token(claims, client_id=CLIENT, nonce=NONCE)
    assert exc.value.error == error


@pytest.mark.parametrize("nonce", [None, ""])
def test_no_expected_nonce_refuses_every_token(nonce):
    with pytest.raises(IdTokenError, match="invalid_nonce"):
        check_id_token({"aud": CLIENT, "nonce": ""}, client_id=CLIENT, nonce=nonce)


def test_error_codes_are_the_rfc_and_oidc_lists():
    assert len(ERROR_CODES) == 7 + 9
    assert error_code("access_denied") == "access_denied" and error_code("login_required") == "login_required"
    for value in (None, "", "x@y.example", "ACCESS_DENIED", "access_denied ", ["access_denied"], "a" * 300):
        assert error_code(value) == "invalid_error_code"


def test_safe_reason_and_issuers():
    assert safe_reason("mismatching_state") == "mismatching_state"
    assert safe_reason("bad reason\n") == "unexpected" and safe_reason(None) == "unexpected"
    assert issuers_for("https://accounts.google.com/") == ["https://accounts.google.com", "accounts.google.com"]
    assert issuers_for("http://127.0.0.1:9400") == ["http://127.0.0.1:9400"]
