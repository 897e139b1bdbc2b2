"""OpenAI-compatible upstreams: OpenAI, DeepSeek, vLLM, llama.cpp, Ollama's /v1 and kin.

`POST {base_url}/chat/completions` with `Authorization: Bearer`. The format itself (requests,
streams, usage, errors, the usage-chunk filter of pass-through) is
`tidegate.formats.openai_chat`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from tidegate.formats import openai_chat
from tidegate.providers.base import Provider
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
