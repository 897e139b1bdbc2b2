"""Google Gemini upstreams: `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`,
with the `x-goog-api-key` header. The format itself is `tidegate.formats.gemini`."""

from __future__ import annotations

from typing import Literal

from tidegate.formats import gemini
from tidegate.providers.base import Provider
from tidegate.settings import ConfigProblem, HttpDeploymentSettings

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


class GeminiSettings(HttpDeploymentSettings):
    """Google's Gemini API (or a compatible server at `base_url`)."""

    provider: Literal["gemini"]

    def problems(self) -> list[ConfigProblem]:
        if self.api_key is None and not self.base_url:
            return [("api_key", "is required for Google's API", "set it, or a base_url")]
        return []


class GeminiProvider(Provider):
    """A Gemini API upstream (Google AI Studio's generativelanguage endpoint)."""

    name = "gemini"
    wire_format = "gemini"
    codec = gemini
    settings = GeminiSettings
    default_base_url = DEFAULT_BASE_URL
    path = "/v1beta/models/{model}:generateContent"
    stream_path = "/v1beta/models/{model}:streamGenerateContent?alt=sse"
    key_header = ("x-goog-api-key", "{key}")
