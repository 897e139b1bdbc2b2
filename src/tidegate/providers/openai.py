"""OpenAI-compatible upstreams: OpenAI, DeepSeek, vLLM, llama.cpp, Ollama's /v1 and kin.

`POST {base_url}/chat/completions` with `Authorization: Bearer`. The format itself (requests,
streams, usage, errors, the usage-chunk filter of pass-through) is
`tidegate.formats.openai_chat`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from tidegate.formats import openai_chat
from tidegate.providers.base import Provider
from tidegate.providers.http import UpstreamCall
from tidegate.settings import DeploymentSettings, HttpDeploymentSettings


class OpenAISettings(HttpDeploymentSettings):
    """An OpenAI-compatible API: its root URL (`/chat/completions` is appended), key, model."""

    provider: Literal["openai"]
    base_url: str = Field(description="the API root, for example https://api.openai.com/v1")


class OpenAIProvider(Provider):
    """An OpenAI Chat Completions upstream."""

    name = "openai"
    wire_format = "openai"
    codec = openai_chat
    settings: ClassVar[type[DeploymentSettings]] = OpenAISettings
    path = "/chat/completions"

    def build_passthrough(self, body: dict[str, Any], stream: bool) -> UpstreamCall:
        """The client's body as it came, with the entry's `max_tokens` when it sets no limit."""
        limit = self.config.max_tokens
        unset = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
        if limit is not None and unset:
            body["max_tokens"] = limit
        return super().build_passthrough(body, stream)
