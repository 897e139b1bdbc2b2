"""Upstream adapters, one module per wire format, registered by their `provider:` name.

Adding a provider: write a `Provider` subclass in its own module and add it to `_REGISTRY`, or
describe it in the config (`providers:`, described.py): a descriptor is a provider too.
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
from tidegate.settings import Config

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


def described_providers(config: Config) -> dict[str, type[Provider]]:
    """The provider class of each descriptor of `config` (`providers:`), by name; a
    descriptor with problems is left out (the config loader refuses such a config)."""
    from tidegate.providers.described import compile_all, provider_for

    compiled, _ = compile_all(config.providers, config.convertors, config.files)
    return {name: provider_for(d) for name, d in compiled.items()}


def provider_class(name: str) -> type[Provider]:
    """The adapter class registered as `name`; `KeyError` if there is none."""
    return _REGISTRY[name]


def provider_names() -> list[str]:
    """Every registered provider name."""
    return sorted(_REGISTRY)


__all__ = ["Provider", "described_providers", "provider_class", "provider_names"]
