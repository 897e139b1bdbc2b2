"""Described providers in-process: token expiry and refresh under concurrency (a manual clock,
a gated token service), who `${user}` is, per-user upstream keys, `image_file` through a
request, runtime secrets redacted."""

from __future__ import annotations

import asyncio
import base64
import itertools
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet

from tests.inprocess import Driver, ScriptedResponse, ScriptedUpstream, sse
from tidegate.providers.credentials import UpstreamKeys
from tidegate.providers.described import DescribedProvider
from tidegate.providers.http import UpstreamCall

SEED = orjson.loads((Path(__file__).parent / "fixtures" / "seed_001_descriptor.json").read_bytes())
MODEL_KEY = "upstream-model-key-0f3a9c"
ALICE_KEY = "upstream-alice-key-51be7d"
ALICE_CLIENT = "tg-alice-client-key-2c81"
ANON_CLIENT = "tg-anon-client-key-73d0"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


class GatedResponse(ScriptedResponse):
    """A whole answer that waits for a gate before its body arrives."""

    def __init__(self, body: bytes, gate: asyncio.Event):
        super().__init__(200, [body], "application/json")
        self.gate = gate

    async def read_body(self, limit: int) -> bytes:
        await self.gate.wait()
        return await super().read_body(limit)


class TokenService:
    """The seed's token endpoint and its chat endpoint, scripted: tokens per key, a gate on
    the token answer, chat refused (401) without a valid token."""

    def __init__(self, expires_in: int | None = 100):
        self.expires_in = expires_in
        self.gate = asyncio.Event()
        self.gate.set()
        self.fetches: list[str] = []  # the key each token was fetched with
        self.valid: dict[str, str] = {}
        self.refused = 0
        self.chats: list[UpstreamCall] = []
        self._n = itertools.count(1)

    def install(self, upstream: ScriptedUpstream) -> None:
        upstream.on("/v1/token", self.token)
        upstream.on("/v1/chat/completions", self.chat)

    def token(self, call: UpstreamCall) -> ScriptedResponse:
        key = call.headers["Authorization"].removeprefix("Bearer ")
        self.fetches.append(key)
        token = f"tok-{next(self._n)}-{key[-6:]}-0123456789"
        self.valid[token] = key
        body: dict[str, Any] = {"token": token}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return GatedResponse(orjson.dumps(body), self.gate)

    def chat(self, call: UpstreamCall) -> ScriptedResponse:
        self.chats.append(call)
        token = call.headers.get("Authorization", "").removeprefix("Bearer ")
        key = self.valid.get(token)
        if key is None:
            self.refused += 1
            body = orjson.dumps({"error": {"message": f"token {token} is not valid"}})
            return ScriptedResponse(401, [body], "application/json")
        chunks = [
            {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"delta": {"content": f"hi via {key[-6:]}"}}]},
            {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        ]
        return ScriptedResponse(200, [sse(*chunks), b"data: [DONE]\n\n"])


#: The seed's descriptor with one extra it lacks: the token's lifetime, from the auth answer.
SEED_WITH_LIFETIME = {**SEED, "auth": {**SEED["auth"], "expires_in": "expires_in"}}


def config(**extra: Any) -> dict[str, Any]:
    return {
        "providers": [SEED],
        "models": [{"name": "seed", "provider": "openai_gpt4", "api_key": MODEL_KEY}],
        "auth": {"api_keys": [{"key": ALICE_CLIENT, "user": "alice"}, ANON_CLIENT]},
        **extra,
    }


def ask(gw: Driver, client: str = ANON_CLIENT, **fields: Any) -> Any:
    body = {"model": "seed", "messages": [{"role": "user", "content": "q"}], **fields}
    return gw.post("/v1/chat/completions", body, {"Authorization": f"Bearer {client}"})


async def until(condition: Any, rounds: int = 2000) -> None:
    """Let the loop run until `condition()` holds (bounded)."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_expiry_refreshes_once_for_50_concurrent_requests() -> None:
    async def main() -> None:
        upstream = ScriptedUpstream()
        service = TokenService(expires_in=100)
        service.install(upstream)
        async with Driver(config(providers=[SEED_WITH_LIFETIME]), upstream=upstream) as gw:
            first = await ask(gw)
            assert first.status == 200 and service.fetches == [MODEL_KEY]
            gw.clock.advance(60)  # 40 s left: fresh (refreshed 30 s before expiry)
            assert (await ask(gw)).status == 200
            assert len(service.fetches) == 1
            gw.clock.advance(15)  # 25 s left: time to refresh
            service.gate.clear()
            tasks = [asyncio.ensure_future(ask(gw)) for _ in range(50)]
            await until(lambda: len(service.fetches) == 2)
            for _ in range(50):
                await asyncio.sleep(0)
            service.gate.set()
            results = await asyncio.gather(*tasks)
            assert [r.status for r in results] == [200] * 50
            assert len(service.fetches) == 2  # exactly one fetch for the 50
            assert all(b"hi via" in r.body for r in results)

    asyncio.run(main())


def test_a_401_refreshes_once_for_50_concurrent_requests() -> None:
    async def main() -> None:
        upstream = ScriptedUpstream()
        service = TokenService(expires_in=None)  # no lifetime: kept until refused
        service.install(upstream)
        async with Driver(config(), upstream=upstream) as gw:
            assert (await ask(gw)).status == 200
            gw.clock.advance(10**6)  # without a lifetime, time alone never refreshes it
            assert (await ask(gw)).status == 200 and len(service.fetches) == 1
            service.valid.clear()  # the upstream revokes it
            service.gate.clear()
            tasks = [asyncio.ensure_future(ask(gw, stream=True)) for _ in range(50)]
            await until(lambda: service.refused == 50)
            service.gate.set()
            results = await asyncio.gather(*tasks)
            assert [r.status for r in results] == [200] * 50
            assert len(service.fetches) == 2  # one refresh after 50 refusals
            assert len(service.chats) == 2 + 50 + 50  # each sent once more, with the new token

    asyncio.run(main())


def test_a_second_401_is_not_retried_again() -> None:
    async def main() -> None:
        upstream = ScriptedUpstream()
        service = TokenService()
        service.install(upstream)
        upstream.on("/v1/chat/completions", lambda call: _refuse(service, call))
        async with Driver(config(), upstream=upstream) as gw:
            result = await ask(gw)
            assert result.status == 502
            assert result.json()["error"]["code"] == "upstream_auth_failed"
            assert len(service.fetches) == 2  # the first token, one refresh: no loop
            assert service.refused == 2
            # The token the upstream quoted back is a secret learned at run time.
            assert b"tok-" not in result.body and b"[REDACTED]" in result.body

    asyncio.run(main())


def _refuse(service: TokenService, call: UpstreamCall) -> ScriptedResponse:
    service.refused += 1
    token = call.headers.get("Authorization", "").removeprefix("Bearer ")
    body = orjson.dumps({"error": {"message": f"token {token} refused"}})
    return ScriptedResponse(401, [body], "application/json")


def test_user_is_the_identity_never_a_request_field() -> None:
    descriptor = {
        "name": "who",
        "chat": {
            "url": "http://upstream.test/chat",
            "data": {"who": "${user}", "claimed": "${request.user}", "q": "${query}"},
            "framing": "json",
            "resp": {"text": "answer"},
        },
    }
    seen: list[dict[str, Any]] = []

    def answer(call: UpstreamCall) -> ScriptedResponse:
        seen.append(orjson.loads(call.body))
        return ScriptedResponse(200, [b'{"answer": "ok"}'], "application/json")

    async def main() -> None:
        upstream = ScriptedUpstream()
        upstream.on("/chat", answer)
        cfg = config()
        cfg["providers"] = [descriptor]
        cfg["models"] = [{"name": "seed", "provider": "who"}]
        async with Driver(cfg, upstream=upstream) as gw:
            assert (await ask(gw, ALICE_CLIENT, user="mallory")).status == 200
            assert (await ask(gw, ANON_CLIENT, user="alice")).status == 200
        assert seen == [
            {"who": "alice", "claimed": "mallory", "q": "q"},
            {"who": "anonymous", "claimed": "alice", "q": "q"},
        ]

    asyncio.run(main())


def test_per_user_keys_never_cross_users() -> None:
    """alice's own key for alice, the model's key for everyone else: on the seed's
    descriptor (through its token exchange) and on a built-in provider."""
    secret = Fernet.generate_key().decode()
    seen_builtin: list[str] = []

    def builtin(call: UpstreamCall) -> ScriptedResponse:
        seen_builtin.append(call.headers["Authorization"])
        chunk = {"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]}
        return ScriptedResponse(200, [orjson.dumps(chunk)], "application/json")

    async def main() -> None:
        upstream = ScriptedUpstream()
        service = TokenService()
        service.install(upstream)
        upstream.on("builtin.test/v1/chat/completions", builtin)
        cfg = config(secret_key=secret)
        cfg["models"].append(
            {
                "name": "builtin",
                "provider": "openai",
                "base_url": "http://builtin.test/v1",
                "api_key": MODEL_KEY,
            }
        )
        async with Driver(cfg, upstream=upstream) as gw:
            keys = UpstreamKeys(gw.services.state, secret)
            await keys.set("alice", "model:seed", ALICE_KEY)
            await keys.set("alice", "provider:openai", ALICE_KEY)
            for client in (ALICE_CLIENT, ANON_CLIENT, ALICE_CLIENT, ANON_CLIENT):
                assert (await ask(gw, client)).status == 200
                body = {"model": "builtin", "messages": [{"role": "user", "content": "q"}]}
                headers = {"Authorization": f"Bearer {client}"}
                assert (await gw.post("/v1/chat/completions", body, headers)).status == 200
            assert service.fetches == [ALICE_KEY, MODEL_KEY]  # one token per user
            assert seen_builtin == [f"Bearer {k}" for k in (ALICE_KEY, MODEL_KEY) * 2]
            # A stored entry is encrypted: the key is not in the state in the clear.
            stored = await gw.services.state.get("upstream_keys:user:alice")
            assert stored is not None and ALICE_KEY.encode() not in stored
            # With a secret key, cached tokens are encrypted in the state too.
            provider = gw.services.router.group("seed")[0].provider
            assert isinstance(provider, DescribedProvider)
            token = await gw.services.state.get("tokens:" + provider.token_key("alice", ALICE_KEY))
            assert token is not None and token.startswith(b"f:") and b"tok-" not in token
            await keys.remove("alice", "model:seed")
            assert (await ask(gw, ALICE_CLIENT)).status == 200
            assert service.fetches[-1] == MODEL_KEY  # back to the model's key

    asyncio.run(main())


def test_image_file_reads_only_below_the_allowed_directories(tmp_path: Path) -> None:
    allowed = tmp_path / "images"
    allowed.mkdir()
    (allowed / "logo.png").write_bytes(PNG)
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    (allowed / "link.png").symlink_to(secret)
    descriptor = {
        "name": "vision",
        "chat": {
            "url": "http://upstream.test/see",
            "data": [
                {
                    "name": "image",
                    "value": "${request.image_path}",
                    "convertor": "image_file:dataurl",
                },
                {"name": "q", "value": "${query}"},
            ],
            "framing": "json",
            "resp": {"text": "answer"},
        },
    }
    seen: list[dict[str, Any]] = []

    def answer(call: UpstreamCall) -> ScriptedResponse:
        seen.append(orjson.loads(call.body))
        return ScriptedResponse(200, [b'{"answer": "a logo"}'], "application/json")

    async def main() -> None:
        upstream = ScriptedUpstream()
        upstream.on("/see", answer)
        cfg = config(files={"allowed_dirs": [str(allowed)]})
        cfg["providers"] = [descriptor]
        cfg["models"] = [{"name": "seed", "provider": "vision"}]
        async with Driver(cfg, upstream=upstream) as gw:
            ok = await ask(gw, image_path="logo.png")
            assert ok.status == 200, ok.body
            assert seen[0]["image"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
            for path in ("../secret.png", str(secret), "link.png", "missing.png", "/etc/passwd"):
                refused = await ask(gw, image_path=path)
                assert refused.status == 400, (path, refused.body)
                assert "image_file" in refused.json()["error"]["message"]
            assert len(seen) == 1  # nothing refused reached the upstream

    asyncio.run(main())


def test_status_rules_decide_retries() -> None:
    descriptor = {
        "name": "flaky",
        "chat": {
            "url": "http://upstream.test/gen",
            "data": {"q": "${query}"},
            "framing": "json",
            "resp": {"text": "answer"},
            "errors": [{"status": 503, "retryable": False}, {"status": 400, "retryable": True}],
        },
    }
    statuses: list[int] = []

    def answer(call: UpstreamCall) -> ScriptedResponse:
        status = statuses.pop(0)
        return ScriptedResponse(status, [b'{"error": "busy"}'], "application/json")

    async def main() -> None:
        upstream = ScriptedUpstream()
        upstream.on("/gen", answer)
        cfg = config()
        cfg["providers"] = [descriptor]
        cfg["models"] = [{"name": "seed", "provider": "flaky", "retries": 2}]
        async with Driver(cfg, upstream=upstream) as gw:
            statuses.extend([503, 200])
            result = await ask(gw)
            assert result.status == 502 and len(upstream.calls) == 1  # not worth another try
            statuses[:] = [400, 400, 400]
            result = await ask(gw)
            assert result.status == 400 and len(upstream.calls) == 4  # tried 1 + 2 retries
            assert "busy" in result.json()["error"]["message"]

    asyncio.run(main())


def test_an_oauth_style_auth_step() -> None:
    """Form-encoded client credentials from `vars:` and the environment, a token at a nested
    path with a fixed `ttl`, mapping-form headers and query parameters."""
    descriptor = {
        "name": "oauth-api",
        "auth": {
            "url": "https://login.vendor.test/oauth/token",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            "data": {
                "grant_type": "client_credentials",
                "client_id": "${client_id}",
                "client_secret": "${env.VENDOR_SECRET}",
            },
            "set_data": [{"name": "bearer", "field": "data.access_token"}],
            "ttl": 60,
        },
        "chat": {
            "url": "https://api.vendor.test/v2/chat",
            "need_auth": True,
            "headers": {"Authorization": "Bearer ${bearer}", "X-Tenant": "${vars.tenant}"},
            "params": {"api-version": "2024-01", "user": "${user}"},
            "data": {"input": "${prompt}", "stream": "${stream}"},
            "framing": "ndjson",
            "resp": {"text": "delta", "done": "finished"},
        },
    }
    secret = "vendor-client-secret-81f2"
    calls: list[UpstreamCall] = []

    def token(call: UpstreamCall) -> ScriptedResponse:
        calls.append(call)
        body = orjson.dumps({"data": {"access_token": "vendor-token-0a1b2c3d"}})
        return ScriptedResponse(200, [body], "application/json")

    def chat(call: UpstreamCall) -> ScriptedResponse:
        calls.append(call)
        lines = b'{"delta": "ok"}\n{"finished": "stop"}\n'
        return ScriptedResponse(200, [lines], "application/x-ndjson")

    async def main() -> None:
        upstream = ScriptedUpstream()
        upstream.on("/oauth/token", token)
        upstream.on("/v2/chat", chat)
        cfg = config()
        cfg["providers"] = [descriptor]
        cfg["models"] = [
            {
                "name": "seed",
                "provider": "oauth-api",
                "vars": {"client_id": "tidegate", "tenant": "acme"},
            }
        ]
        async with Driver(cfg, upstream=upstream, env={"VENDOR_SECRET": secret}) as gw:
            for _ in range(2):
                result = await ask(gw, ALICE_CLIENT, stream=True)
                assert result.status == 200 and b"ok" in result.body
            gw.clock.advance(61)
            assert (await ask(gw, ALICE_CLIENT)).status == 200
        auth = [c for c in calls if "oauth" in c.url]
        assert len(auth) == 2  # the second after the ttl passed
        assert auth[0].body == (
            b"grant_type=client_credentials&client_id=tidegate&client_secret=" + secret.encode()
        )
        chat_call = next(c for c in calls if "/v2/chat" in c.url)
        assert chat_call.url == "https://api.vendor.test/v2/chat?api-version=2024-01&user=alice"
        assert chat_call.headers["Authorization"] == "Bearer vendor-token-0a1b2c3d"
        assert chat_call.headers["X-Tenant"] == "acme"
        assert orjson.loads(chat_call.body) == {"input": "q", "stream": True}
        assert secret in gw.config.secrets()  # an ${env.NAME} value is a secret

    asyncio.run(main())
