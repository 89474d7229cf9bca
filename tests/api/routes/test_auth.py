from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from jose import jwt

from app.core import security
from tests.conftest import TEST_SECRET

REGISTER = "/api/v1/auth/register"
TOKEN = "/api/v1/auth/token"
ME = "/api/v1/users/me"


def test_register_returns_the_public_user_without_the_password(client: TestClient) -> None:
    r = client.post(REGISTER, json={"email": "Ada@Example.com", "password": "s3cret-pass", "full_name": "Ada L"})
    assert r.status_code == 201
    body = r.json()
    assert body["email"] == "ada@example.com"
    assert body["full_name"] == "Ada L"
    assert body["role"] == "client"
    assert isinstance(body["id"], int)
    assert not {"password", "hashed_password"} & body.keys()
    assert "s3cret-pass" not in r.text


def test_register_twice_with_the_same_email_is_409(client: TestClient) -> None:
    assert client.post(REGISTER, json={"email": "bob@example.com", "password": "password1"}).status_code == 201
    r = client.post(REGISTER, json={"email": "BOB@example.com", "password": "password2"})
    assert r.status_code == 409
    assert "already exists" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"email": "not-an-email", "password": "password1"}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"password": "password1"}, "email"),
        ({"email": 5, "password": "password1"}, "email"),
    ],
)
def test_register_rejects_bad_input_with_a_readable_422(
    client: TestClient, body: dict[str, object], mentions: str
) -> None:
    r = client.post(REGISTER, json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str)
    assert mentions in r.json()["detail"]


def test_token_for_right_and_wrong_passwords(client: TestClient) -> None:
    client.post(REGISTER, json={"email": "cy@example.com", "password": "password-cy"})
    ok = client.post(TOKEN, data={"username": "cy@example.com", "password": "password-cy"})
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "bearer"
    me = client.get(ME, headers={"Authorization": f"Bearer {ok.json()['access_token']}"})
    assert me.status_code == 200
    assert me.json()["email"] == "cy@example.com"

    wrong = client.post(TOKEN, data={"username": "cy@example.com", "password": "password-xx"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "incorrect email or password"
    unknown = client.post(TOKEN, data={"username": "nobody@example.com", "password": "password-cy"})
    assert unknown.status_code == 401


def test_token_without_form_fields_is_422(client: TestClient) -> None:
    assert client.post(TOKEN, data={}).status_code == 422
    assert client.post(TOKEN, json={"username": "a", "password": "b"}).status_code == 422


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _user_id(client: TestClient) -> str:
    r = client.post(REGISTER, json={"email": "dee@example.com", "password": "password-dee"})
    return str(r.json()["id"])


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda uid: security.create_access_token(uid, TEST_SECRET, timedelta(seconds=-5)), id="expired"),
        pytest.param(lambda uid: "garbage.token.value", id="garbage"),
        pytest.param(
            lambda uid: security.create_access_token(uid, "another-secret-key-xxxxxxxxxxxxxxx", timedelta(minutes=5)),
            id="wrong-key",
        ),
        pytest.param(
            lambda uid: (
                f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': uid, 'exp': 4102444800, 'type': 'access'})}."
            ),
            id="alg-none",
        ),
        pytest.param(
            lambda uid: jwt.encode({"sub": uid, "exp": 4102444800, "type": "refresh"}, TEST_SECRET, algorithm="HS256"),
            id="wrong-type",
        ),
        pytest.param(
            lambda uid: jwt.encode({"sub": uid, "type": "access"}, TEST_SECRET, algorithm="HS256"), id="no-expiry"
        ),
        pytest.param(
            lambda uid: jwt.encode(
                {"sub": "999999", "exp": 4102444800, "type": "access"}, TEST_SECRET, algorithm="HS256"
            ),
            id="unknown-user",
        ),
        pytest.param(
            lambda uid: jwt.encode({"sub": uid, "exp": 4102444800, "type": "access"}, TEST_SECRET, algorithm="HS512"),
            id="other-hmac-alg",
        ),
    ],
)
def test_bad_tokens_are_401(client: TestClient, make_token) -> None:  # type: ignore[no-untyped-def]
    token = make_token(_user_id(client))
    r = client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_me_without_a_token_is_401(client: TestClient) -> None:
    r = client.get(ME)
    assert r.status_code == 401
    assert "Bearer" in r.json()["detail"]
