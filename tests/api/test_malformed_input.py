"""No body, however malformed, makes any endpoint answer 500."""

from __future__ import annotations

from fastapi.testclient import TestClient

MALFORMED_BODIES: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"null", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'{"amount": 1e400}', "application/json"),
    (b'{"amount": 99999999999999999999999999999999}', "application/json"),
    (b'{"email": {"$ne": null}, "password": ["x"]}', "application/json"),
    (b'{"email": "' + b"a" * 5000 + b'@x.io", "password": "' + b"p" * 5000 + b'"}', "application/json"),
    (b"\x00\xff\xfe garbage", "application/json"),
    (b"username=%ff%fe&password=", "application/x-www-form-urlencoded"),
    (b"--x\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data; boundary=x"),
    (b"<xml/>", "text/xml"),
]


def test_no_endpoint_answers_500_to_malformed_bodies(client: TestClient, admin_headers: dict[str, str]) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for template, operations in paths.items():
        path = template.replace("{user_id}", "1")
        for method in operations:
            for body, content_type in MALFORMED_BODIES:
                for headers in (admin_headers, {}):
                    r = client.request(
                        method.upper(),
                        path,
                        content=body,
                        headers={**headers, "Content-Type": content_type, "Idempotency-Key": "fuzz"},
                    )
                    assert r.status_code < 500, (method, path, body[:40], r.status_code, r.text)
                    assert r.headers["content-type"].startswith("application/json"), (method, path)
                    checked += 1
    assert checked > 100


def test_oversized_bodies_are_413(client: TestClient) -> None:
    big = b'{"email": "' + b"a" * (11 * 1024 * 1024) + b'"}'
    r = client.post("/api/v1/auth/register", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]
