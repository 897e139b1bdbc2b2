"""Anthropic Messages upstreams: `POST {base_url}/v1/messages` with `x-api-key`.

The format itself (requests, streams, usage, errors) is `tidegate.formats.anthropic`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from tidegate.formats import anthropic
from tidegate.providers.base import Provider
from tidegate.settings import ConfigProblem, HttpDeploymentSettings

DEFAULT_BASE_URL = "https://api.anthropic.com"


class AnthropicSettings(HttpDeploymentSettings):
    """Anthropic's API (or a compatible server at `base_url`)."""

    provider: Literal["anthropic"]

    def problems(self) -> list[ConfigProblem]:
        if self.api_key is None and not self.base_url:
            return [("api_key", "is required for api.anthropic.com", "set it, or a base_url")]
        return []


class AnthropicProvider(Provider):
    """An Anthropic Messages API upstream."""

    name = "anthropic"
    wire_format = "anthropic"
    codec = anthropic
    settings = AnthropicSettings
    default_base_url = DEFAULT_BASE_URL
    path = "/v1/messages"
    key_header = ("x-api-key", "{key}")
    static_headers: ClassVar[dict[str, str]] = {"anthropic-version": anthropic.API_VERSION}
