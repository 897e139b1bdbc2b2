"""AnythingLLM workspaces, through the developer API (the format: formats/anythingllm.py).

A workspace keeps the conversation itself (per `sessionId`), so only the last user message is
sent: earlier turns, system prompts and sampling settings cannot be carried and are reported
as dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from tidegate.events import ChatRequest
from tidegate.formats import anythingllm
from tidegate.providers.base import Provider
from tidegate.settings import ConfigProblem, HttpDeploymentSettings


class AnythingLLMSettings(HttpDeploymentSettings):
    """An AnythingLLM workspace: the server, a developer API key, the workspace's slug."""

    provider: Literal["anythingllm"]
    base_url: str = Field(description="the AnythingLLM server, e.g. http://host:3001")
    api_key: SecretStr = Field(description="create one in AnythingLLM: Settings > API Keys")
    workspace: str = Field(min_length=1, description="the workspace slug shown in its URL")
    mode: Literal["chat", "query", "automatic"] | None = None

    def problems(self) -> list[ConfigProblem]:
        if self.max_tokens is not None:
            return [("max_tokens", "cannot be sent to a workspace", "remove it")]
        return []


class AnythingLLMProvider(Provider):
    """An AnythingLLM workspace, reached through its developer API."""

    name = "anythingllm"
    wire_format = "anythingllm"
    codec = anythingllm
    settings = AnythingLLMSettings
    keeps_history = True
    path = "/api/v1/workspace/{settings.workspace}/chat"
    stream_path = "/api/v1/workspace/{settings.workspace}/stream-chat"
    config: AnythingLLMSettings

    @property
    def label(self) -> str:
        return f"{self.config.name}@anythingllm/{self.config.workspace}"

    def wire_request(self, request: ChatRequest) -> tuple[dict[str, Any], list[str]]:
        return anythingllm.request_to_wire(
            request, self.config.upstream_model, self.config.mode or "chat"
        )
