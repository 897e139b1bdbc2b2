"""The admin API needs an admin key; what upstreams look like inside stays in the log."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess

ADMIN_KEY = "tg-admin-key-5c1e77a09b3d"
DEMO = {"name": "demo", "provider": "demo", "pace": 0.001}


def deployments(gw: GatewayProcess, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{gw.url}/admin/deployments", headers=headers or {}, timeout=10)


def test_a_client_key_cannot_read_the_admin_api_without_admin_keys(
    gateway: GatewayProcess,
) -> None:
    """Client keys but no admin keys: the admin API is closed, and says how to open it."""
    response = deployments(gateway, {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == 403
    assert "set auth.admin_keys" in response.text
    assert "deployments" not in response.json()


@pytest.fixture
def with_admin(start_gateway: Any) -> GatewayProcess:
    config = {
        "models": [DEMO],
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": ["${ADMIN_KEY}", "${OTHER_ADMIN:-}"]},
    }
    gw: GatewayProcess = start_gateway(config, env={"ADMIN_KEY": ADMIN_KEY})
    return gw


def test_a_client_key_gets_403_and_an_admin_key_gets_200(with_admin: GatewayProcess) -> None:
    """Invariant: only an admin key opens `/admin/`; a client key is told an admin key is
    needed; an admin key is no client key."""
    refused = deployments(with_admin, {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert refused.status_code == 403
    assert "admin key" in refused.json()["error"]["message"]
    assert deployments(with_admin).status_code == 401
    assert deployments(with_admin, {"Authorization": "Bearer not-a-key"}).status_code == 401
    for headers in ({"Authorization": f"Bearer {ADMIN_KEY}"}, {"x-api-key": ADMIN_KEY}):
        ok = deployments(with_admin, headers)
        assert ok.status_code == 200, ok.text
        assert "deployments" in ok.json()
    # Admin keys are for the admin API only.
    models = httpx.get(
        f"{with_admin.url}/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert models.status_code == 401
    assert ADMIN_KEY not in with_admin.output()


def test_without_any_keys_the_admin_api_stays_open(start_gateway: Any) -> None:
    """Local development (no keys at all): `/admin/deployments` answers as before."""
    gw = start_gateway({"models": [DEMO]})
    assert deployments(gw).status_code == 200


@pytest.mark.parametrize("path", ["/stream-ask", "/v1/chat/completions"])
def test_connect_errors_name_the_model_not_the_address(gateway: GatewayProcess, path: str) -> None:
    """The client learns which model could not be reached; the internal address of its
    upstream is only in the access log."""
    request_id = f"admin-refused-{path.strip('/').replace('/', '-')}"
    body: dict[str, Any] = {"model": "openai-refused"}
    if path == "/stream-ask":
        body["question"] = "q"
    else:
        body["messages"] = [{"role": "user", "content": "q"}]
    response = httpx.post(
        gateway.url + path,
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-Id": request_id},
        timeout=20,
    )
    assert response.status_code == 502
    assert "openai-refused" in response.text
    assert "127.0.0.1:9" not in response.text
    assert "127.0.0.1" not in response.text
    record = gateway.record_for(request_id)
    assert "127.0.0.1:9" in record["error_detail"]
