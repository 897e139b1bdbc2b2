"""Upstream adapters, one module per wire format, registered by their `provider:` name.

Adding a provider: write a `Provider` subclass in its own module and add it to `_REGISTRY`.
"""

from __future__ import annotations

from tidegate.providers.anthropic import AnthropicProvider
from tidegate.providers.anythingllm import AnythingLLMProvider
from tidegate.providers.base import Provider
from tidegate.providers.demo import DemoProvider
from tidegate.providers.gemini import GeminiProvider
from tidegate.providers.ollama import OllamaProvider
from tidegate.providers.openai import OpenAIProvider
from tidegate.providers.openai_responses import OpenAIResponsesProvider

_REGISTRY: dict[str, type[Provider]] = {
    cls.name: cls
    for cls in (
        OpenAIProvider,
        AnthropicProvider,
        GeminiProvider,
        OllamaProvider,
        AnythingLLMProvider,
        DemoProvider,
        OpenAIResponsesProvider,
    )
}


def provider_class(name: str) -> type[Provider]:
    """The adapter class registered as `name`; `KeyError` if there is none."""
    return _REGISTRY[name]


def provider_names() -> list[str]:
    """Every registered provider name."""
    return sorted(_REGISTRY)


__all__ = ["Provider", "provider_class", "provider_names"]
