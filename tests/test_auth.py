"""Client keys may carry a user and a name: the log names the key by its name (never the key)
and records the user; a key of the config is found by its hash."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

KEY_A = "tg-alice-key-5e1f0c9a7b"
KEY_B = "tg-plain-key-2d8e4f6a1c"


def test_keys_with_users_and_names(start_gateway: Any) -> None:
    gw = start_gateway(
        {
            "models": [{"name": "demo", "provider": "demo", "pace": 0}],
            "auth": {"api_keys": [{"key": KEY_A, "user": "alice", "name": "alice-laptop"}, KEY_B]},
        }
    )
    body = {"question": "q"}
    a = httpx.post(f"{gw.url}/stream-ask", json=body, headers={"Authorization": f"Bearer {KEY_A}"})
    b = httpx.post(f"{gw.url}/stream-ask", json=body, headers={"x-api-key": KEY_B})
    bad = httpx.post(f"{gw.url}/stream-ask", json=body, headers={"x-api-key": KEY_B + "x"})
    assert (a.status_code, b.status_code, bad.status_code) == (200, 200, 401)
    ra = gw.record_for(a.headers["x-request-id"])
    rb = gw.record_for(b.headers["x-request-id"])
    assert (ra["key"], ra["user"]) == ("alice-laptop", "alice")
    assert rb["key"].startswith("key-") and "user" not in rb
    output = gw.output()
    assert KEY_A not in output and KEY_B not in output
