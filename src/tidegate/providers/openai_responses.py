"""OpenAI Responses upstreams: `POST {base_url}/responses` with `Authorization: Bearer`.

The format itself (requests, streams, usage, errors) is `tidegate.formats.openai_responses`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from tidegate.formats import openai_responses
from tidegate.providers.base import Provider
from tidegate.settings import DeploymentSettings, HttpDeploymentSettings


class OpenAIResponsesSettings(HttpDeploymentSettings):
    """A Responses API: its root URL (`/responses` is appended), key, model."""

    provider: Literal["openai-responses"]
    base_url: str = Field(description="the API root, for example https://api.openai.com/v1")


class OpenAIResponsesProvider(Provider):
    """An OpenAI Responses API upstream."""

    name = "openai-responses"
    wire_format = openai_responses.WIRE_FORMAT
    codec = openai_responses
    settings: ClassVar[type[DeploymentSettings]] = OpenAIResponsesSettings
    path = "/responses"
