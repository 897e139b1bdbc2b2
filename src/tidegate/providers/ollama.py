"""Ollama's native API: `POST {base_url}/api/chat`, NDJSON (the format: formats/ollama.py).
Ollama's OpenAI-compatible `/v1` is served by the `openai` provider instead."""

from __future__ import annotations

from typing import Literal

from tidegate.formats import ollama
from tidegate.providers.base import Provider
from tidegate.settings import HttpDeploymentSettings


class OllamaSettings(HttpDeploymentSettings):
    """An Ollama server (local by default)."""

    provider: Literal["ollama"]


class OllamaProvider(Provider):
    """A local or remote Ollama server."""

    name = "ollama"
    wire_format = "ollama"
    codec = ollama
    settings = OllamaSettings
    default_base_url = "http://127.0.0.1:11434"
    path = "/api/chat"
