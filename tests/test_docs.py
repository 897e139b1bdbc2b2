"""The examples in the documentation work."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tidegate.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```yaml\n(models:.*?)```", readme, re.DOTALL)
    assert example is not None
    path = tmp_path / "example.yaml"
    path.write_text(example.group(1))
    names = set(re.findall(r"\$\{(\w+)\}", example.group(1)))
    env = {
        name: "http://127.0.0.1:3001" if name.endswith("URL") else f"value-of-{name}"
        for name in names
    }
    config = load_config(path, env)
    assert config.model_names() == ["deepseek-chat", "kb", "claude", "gemini-flash", "local"]
    assert config.stream_ask.model == "kb"
    assert yaml.safe_load(example.group(1))["auth"]["api_keys"] == ["${TIDEGATE_API_KEY}"]


def test_protocol_lists_the_task_defaults_as_they_are() -> None:
    """docs/protocol.md shows the built-in task prompts as configuration; it is the code's."""
    from tidegate.prompts import DEFAULTS
    from tidegate.settings import TasksConfig

    protocol = (ROOT / "docs" / "protocol.md").read_text()
    block = re.search(r"````yaml\n(stream_ask:.*?)````", protocol, re.DOTALL)
    assert block is not None
    tasks = yaml.safe_load(block.group(1))["stream_ask"]["tasks"]
    TasksConfig.model_validate(tasks)
    assert {name: (t["system"], t["template"]) for name, t in tasks.items()} == {
        name: (p.system, p.template) for name, p in DEFAULTS.items()
    }


def test_providers_doc_shows_the_seed_descriptor_verbatim_and_its_examples_load(
    tmp_path: Path,
) -> None:
    """docs/providers.md: seed 001's descriptor exactly as the seed gives it (the tests' copy),
    and every complete example a valid configuration."""
    doc = (ROOT / "docs" / "providers.md").read_text()
    seed = (ROOT / "tests" / "fixtures" / "seed_001_descriptor.json").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, re.DOTALL)
    assert blocks[0] == seed
    (tmp_path / "openai_gpt4.json").write_text(blocks[0])
    examples = re.findall(r"```yaml\n(providers:.*?)```", doc, re.DOTALL)
    assert len(examples) == 4
    names = []
    for i, example in enumerate(examples):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(example)
        outside = re.sub(r"^providers:.*?(?=^\S)", "", example, flags=re.DOTALL | re.MULTILINE)
        env = {name: f"value-of-{name}" for name in re.findall(r"\$\{(\w+)\}", outside)}
        env["SIGNING_KEY"] = "doc-signing-key"
        config = load_config(path, env)
        names += [d.name for d in config.providers]
    assert names == ["openai_gpt4", "ndjson-api", "json-api", "lines-api"]
