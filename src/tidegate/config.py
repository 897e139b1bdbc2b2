"""Configuration: the models file, `${ENV}` substitution and `.env`, validated once at start-up.

This is the only module that reads the environment. `load_config` returns a frozen `Config` or
raises `ConfigError` naming the field (as a path such as `models[1].api_key`) and the fix.

Where the configuration comes from, in order:
1. a YAML file (`--config` or `TIDEGATE_CONFIG`);
2. without one, the seed's variables `ANYTHINGLLM_BASE_URL`, `ANYTHINGLLM_API_KEY` and
   `ANYTHINGLLM_WORKSPACE_SLUG` define a model `anythingllm`;
3. with nothing at all, a built-in model `demo` streams a labelled sample answer.
Variables come from the process environment, then from `.env` (the environment wins).

Hostile or mistaken input is refused cheaply and quietly: a file that is not UTF-8 is a
`ConfigError`, YAML aliases may expand to at most `MAX_YAML_VALUES` values (measured on the
node graph before anything is built, so a "billion laughs" file costs microseconds), and no
`ConfigError` ever shows a value that came from an environment variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from tidegate.errors import ConfigError
from tidegate.providers import provider_class, provider_names
from tidegate.providers.credentials import valid_secret_key
from tidegate.redact import Redactor
from tidegate.settings import Config, ConfigProblem, DeploymentSettings, FunctionStep, LLMStep

#: How many values (scalars, lists, mappings) a YAML file may expand to through aliases.
MAX_YAML_VALUES = 50_000
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}")
_SEED_VARS = ("ANYTHINGLLM_BASE_URL", "ANYTHINGLLM_API_KEY", "ANYTHINGLLM_WORKSPACE_SLUG")


# ---------------------------------------------------------------------------------------------


def read_environment(env_file: str | Path | None = ".env") -> dict[str, str]:
    """The process environment over the values of `env_file` (missing file: environment only).

    Raises `ConfigError` when the file is not UTF-8 text.
    """
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        try:
            values = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        except UnicodeDecodeError as exc:
            raise ConfigError(
                str(env_file), f"is not UTF-8 text ({_byte_position(exc)})", "save it as UTF-8"
            ) from None
    values.update(os.environ)
    return values


def load_config(path: str | Path | None, env: Mapping[str, str]) -> Config:
    """Build the configuration from a YAML file (or the environment alone) and validate it.

    Raises `ConfigError`, whose text never contains a value taken from `env`.
    """
    from_env: set[str] = set()
    try:
        return _load(path, env, from_env)
    except ConfigError as exc:
        if not from_env:
            raise
        # A secret put in the wrong field must not be printed in the message about that field.
        raise exc.redacted(_redactor_for(from_env)) from None


def _load(path: str | Path | None, env: Mapping[str, str], from_env: set[str]) -> Config:
    if path is None and env.get("TIDEGATE_CONFIG"):
        path = env["TIDEGATE_CONFIG"]
    base_dir = None
    if path is not None:
        raw = _read_yaml(Path(path))
        # Descriptor templates are rendered per request; they reach the environment only
        # through ${env.NAME}, read by `parse_config`.
        providers = raw.pop("providers", None)
        raw = _substitute(raw, env, "", from_env)
        if providers is not None:
            raw["providers"] = providers
        raw.setdefault("source", str(path))
        base_dir = Path(path).resolve().parent
    else:
        raw = _config_from_environment(env, from_env)
    if raw.get("secret_key") is None and env.get("TIDEGATE_SECRET_KEY"):
        raw["secret_key"] = env["TIDEGATE_SECRET_KEY"]
        from_env.add(env["TIDEGATE_SECRET_KEY"])
    config = parse_config(raw, env=env, base_dir=base_dir, from_env=from_env)
    return config


def _redactor_for(values: set[str]) -> Redactor:
    """Removes each value, also in the escaped form `repr` gives it inside messages."""
    forms = set()
    for value in values:
        if len(value) >= 4:
            forms.add(value)
            forms.add(repr(value)[1:-1])
    return Redactor(forms)


def _byte_position(exc: UnicodeDecodeError) -> str:
    line = exc.object[: exc.start].count(b"\n") + 1
    return f"byte {exc.start + 1}, line {line}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "--config", f"file {str(path)!r} does not exist", "check the path"
        ) from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {str(path)!r}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), f"is not UTF-8 text ({_byte_position(exc)})", "save the file as UTF-8"
        ) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, path)
        document = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), f"invalid YAML{where}", "fix the syntax") from exc
    except RecursionError:
        raise ConfigError(
            str(path), "the YAML is nested too deeply", "flatten the nested lists and mappings"
        ) from None
    finally:
        loader.dispose()
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(str(path), "the top level must be a mapping with a `models:` list")
    return document


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Refuse a document whose aliases expand it past `MAX_YAML_VALUES` values, or that
    contains itself. Sizes are memoized per node, so the check is linear in the file."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in open_nodes:
            raise ConfigError(
                str(path),
                "an alias (*name) refers to itself or to a block that contains it",
                "a configuration cannot be recursive",
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    # Only aliases can make the expansion larger than the nodes written in the file.
    if expanded > max(MAX_YAML_VALUES, len(sizes)):
        raise ConfigError(
            str(path),
            f"the YAML expands to more than {MAX_YAML_VALUES} values; "
            "aliases (*name) may repeat a block only so often",
            "repeat fewer blocks, or write them out",
        )


def _substitute(value: Any, env: Mapping[str, str], where: str, from_env: set[str]) -> Any:
    if isinstance(value, str):
        return _substitute_string(value, env, where, from_env)
    if isinstance(value, list):
        return [_substitute(v, env, f"{where}[{i}]", from_env) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: _substitute(v, env, f"{where}.{k}" if where else str(k), from_env)
            for k, v in value.items()
        }
    return value


def _substitute_string(text: str, env: Mapping[str, str], where: str, from_env: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, has_default, default = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if value is None or (value == "" and has_default and has_default.startswith(":")):
            if has_default is None:
                raise ConfigError(
                    where,
                    f"environment variable {name} is not set",
                    f"set {name} in the environment or in .env, "
                    f"or give a default with ${{{name}:-value}}",
                )
            return default or ""
        from_env.add(value)
        return value

    return _ENV_REF.sub(replace, text)


def _config_from_environment(env: Mapping[str, str], from_env: set[str]) -> dict[str, Any]:
    from_env.update(env[name] for name in (*_SEED_VARS, "TIDEGATE_API_KEY") if env.get(name))
    present = [name for name in _SEED_VARS if env.get(name)]
    raw: dict[str, Any] = {"source": "environment"}
    if present:
        missing = [name for name in _SEED_VARS if name not in present]
        if missing:
            raise ConfigError(
                missing[0],
                f"{', '.join(present)} set but {', '.join(missing)} missing",
                "set all three ANYTHINGLLM_* variables, or write a config file",
            )
        raw["models"] = [
            {
                "name": "anythingllm",
                "provider": "anythingllm",
                "base_url": env["ANYTHINGLLM_BASE_URL"],
                "api_key": env["ANYTHINGLLM_API_KEY"],
                "workspace": env["ANYTHINGLLM_WORKSPACE_SLUG"],
            }
        ]
        raw["stream_ask"] = {"model": "anythingllm"}
    else:
        raw["models"] = [{"name": "demo", "provider": "demo"}]
        raw["source"] = "built-in demo"
    if env.get("TIDEGATE_API_KEY"):
        raw["auth"] = {"api_keys": [env["TIDEGATE_API_KEY"]]}
    return raw


def parse_config(
    raw: dict[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    from_env: set[str] | None = None,
) -> Config:
    """A configuration from its raw (already substituted) data, or `ConfigError`.

    `providers:` entries are read here (`file:` relative to `base_dir`), their `${env.NAME}`
    references from `env`; every problem of every descriptor is reported at once
    (`ConfigProblems`).
    """
    env = env if env is not None else {}
    descriptors = _descriptor_entries(raw, base_dir or Path.cwd())
    auth = raw.get("auth")
    for field in ("api_keys", "admin_keys"):
        if isinstance(auth, dict) and isinstance(auth.get(field), list):
            # `${KEY:-}` expands to "": an optional key that is not set is no key at all.
            auth[field] = [k for k in auth[field] if k != ""]
    models = raw.get("models")
    if isinstance(models, list):
        raw["models"] = [_validate_model(i, entry, descriptors) for i, entry in enumerate(models)]
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, Config, ()) from None
    if config.secret_key is not None and not valid_secret_key(config.secret_key.get_secret_value()):
        raise ConfigError(
            "secret_key",
            "is not a Fernet key (32 bytes, url-safe base64)",
            "generate one with `tidegate keys new-secret` and set TIDEGATE_SECRET_KEY to it",
        )
    _bind_environment(config, env, from_env if from_env is not None else set())
    _check_semantics(config)
    _check_descriptors(config)
    return config


class ConfigProblems(ConfigError):
    """Several problems found at once (descriptors are checked whole), each with its location
    and fix; the text lists them all, one per line."""

    def __init__(self, problems: list[ConfigProblem]):
        super().__init__(*problems[0])
        self.problems = problems
        lines = [f"{f}: {p}" + (f" ({x})" if x else "") for f, p, x in problems]
        if len(lines) > 1:
            self.args = (f"{len(lines)} problems:\n  " + "\n  ".join(lines),)

    def redacted(self, redact: Callable[[str], str]) -> ConfigError:
        """The same problems with `redact` applied to every part of their text."""
        return ConfigProblems(
            [(redact(f), redact(p), redact(x) if x else None) for f, p, x in self.problems]
        )


#: The largest descriptor file read (`providers: [{file: ...}]`).
MAX_DESCRIPTOR_BYTES = 1024 * 1024
_ENV_IN_TEMPLATE = re.compile(r"(?<!\$)\$\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)")


def _descriptor_entries(raw: dict[str, Any], base_dir: Path) -> dict[str, int]:
    """Read `providers:` entries in place (`{file: path}` becomes the file's descriptor) and
    return the index of each descriptor by name; built-in and repeated names are refused."""
    entries = raw.get("providers")
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ConfigError("providers", "must be a list of descriptors (or {file: path.json})")
    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"providers[{i}]"
        if isinstance(entry, dict) and "file" in entry:
            if set(entry) != {"file"}:
                others = ", ".join(sorted(str(k) for k in entry if k != "file"))
                raise ConfigError(
                    where, f"has file: and {others}", "put the whole descriptor in the file"
                )
            entry = entries[i] = _read_descriptor(str(entry["file"]), base_dir, where)
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a descriptor mapping (name, auth, chat) or {file:}")
        name = entry.get("name")
        if not isinstance(name, str):
            continue  # validation names the missing field
        if name in provider_names():
            raise ConfigError(
                f"{where}.name",
                f"{name!r} is a built-in provider",
                "give the descriptor another name",
            )
        if name in names:
            raise ConfigError(f"{where}.name", f"{name!r} is also providers[{names[name]}]'s name")
        names[name] = i
    return names


def _read_descriptor(file: str, base_dir: Path, where: str) -> dict[str, Any]:
    path = Path(file).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.suffix.lower() in (".yaml", ".yml"):
        data = _read_yaml(path)
    else:
        try:
            with path.open("rb") as handle:
                content = handle.read(MAX_DESCRIPTOR_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"{where}.file", f"cannot read {file!r}: {exc.strerror}", "check the path"
            ) from None
        if len(content) > MAX_DESCRIPTOR_BYTES:
            raise ConfigError(f"{where}.file", f"{file!r} is larger than {MAX_DESCRIPTOR_BYTES}")
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{where}.file", f"{file!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}.file", f"{file!r} does not hold one descriptor object")
    return data


def _bind_environment(config: Config, env: Mapping[str, str], from_env: set[str]) -> None:
    """Give each descriptor the environment values it reads: `${env.NAME}` in its templates
    and the keys of `hmac_sha256:NAME` convertors."""
    for descriptor in config.providers:
        wanted: set[str] = set()
        _env_names(descriptor.model_dump(), "", wanted)
        values = {name: env[name] for name in sorted(wanted) if name in env}
        from_env.update(values.values())
        descriptor.bind_env(values)


def _env_names(value: Any, key: str, found: set[str]) -> None:
    """Add the environment variables a descriptor's raw data reads to `found`."""
    if isinstance(value, str):
        found.update(_ENV_IN_TEMPLATE.findall(value))
        if key == "convertor" and value.startswith("hmac_sha256:"):
            found.add(value.partition(":")[2])
    elif isinstance(value, dict):
        for k, v in value.items():
            _env_names(v, str(k), found)
    elif isinstance(value, list | tuple):
        for v in value:
            _env_names(v, "", found)


def _check_descriptors(config: Config) -> None:
    """Every descriptor compiles, and every model using one gives what its templates read."""
    from tidegate.providers.described import DescribedSettings, compile_all, model_problems

    compiled, problems = compile_all(config.providers, config.convertors, config.files)
    for i, model in enumerate(config.models):
        descriptor = compiled.get(model.provider)
        if descriptor is not None and isinstance(model, DescribedSettings):
            problems += model_problems(descriptor, model, f"models[{i}]")
    if problems:
        raise ConfigProblems(problems)


def _validate_model(
    index: int, entry: Any, descriptors: Mapping[str, int] | None = None
) -> DeploymentSettings:
    """One `models:` entry, validated by the settings its provider declares (a described
    provider's: `DescribedSettings`)."""
    where = f"models[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(where, "must be a mapping of settings such as name: and provider:")
    name = entry.get("provider")
    known = ", ".join([*provider_names(), *(descriptors or {})])
    if name is None:
        raise ConfigError(f"{where}.provider", "is required", f"use one of: {known}")
    try:
        if descriptors and str(name) in descriptors:
            from tidegate.providers.described import DescribedSettings

            settings: type[DeploymentSettings] = DescribedSettings
        else:
            settings = provider_class(str(name)).settings
    except KeyError:
        raise ConfigError(
            f"{where}.provider", f"unknown provider {name!r}", f"use one of: {known}"
        ) from None
    try:
        model = settings.model_validate(entry)
    except ValidationError as exc:
        raise _config_error(exc, settings, ("models", index), provider=str(name)) from None
    for field, problem, fix in model.problems():
        raise ConfigError(f"{where}.{field}", problem, fix)
    return model


def _config_error(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: tuple[int | str, ...],
    provider: str | None = None,
) -> ConfigError:
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    field = _path(prefix + loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        problem = f"unknown setting for provider {provider}" if provider else "unknown setting"
        return ConfigError(field, problem, _did_you_mean(model, loc))
    if kind == "missing":
        hint = _field_of(model, loc)
        fix = hint.description if hint is not None and hint.description else None
        return ConfigError(field, "is required", fix or "add it to the config file")
    return ConfigError(field, first["msg"])


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _nested(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model that holds the last element of `loc`."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        annotation = getattr(info, "annotation", None) if info else None
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


def _field_of(model: type[BaseModel], loc: tuple[int | str, ...]) -> FieldInfo | None:
    holder = _nested(model, loc)
    return holder.model_fields.get(str(loc[-1])) if holder is not None else None


def _did_you_mean(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    import difflib

    holder = _nested(model, loc) or model
    known = list(holder.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known settings here: {', '.join(known)}"


def _check_semantics(config: Config) -> None:
    names = config.model_names()
    for i, m in enumerate(config.models):
        for fallback in m.fallbacks:
            if fallback not in names:
                raise ConfigError(
                    f"models[{i}].fallbacks",
                    f"names {fallback!r}, which no models: entry defines",
                    f"use one of: {', '.join(names)}",
                )
            if fallback == m.name:
                raise ConfigError(f"models[{i}].fallbacks", "a model cannot fall back to itself")
    _check_workflows(config, names)
    if config.stream_ask.model is not None and config.stream_ask.model not in names:
        raise ConfigError(
            "stream_ask.model",
            f"names {config.stream_ask.model!r}, which no models: entry defines",
            f"use one of: {', '.join(names)}",
        )


_STEP_REF = re.compile(r"\{steps\.([A-Za-z0-9_-]+)\.output\}")


def _check_workflows(config: Config, models: list[str]) -> None:
    """Workflow names unique, steps named once, models defined, references to earlier steps
    only, functions importable; `workflow_query.workflow` names a workflow."""
    import importlib
    import inspect

    seen: set[str] = set()
    for i, workflow in enumerate(config.workflows):
        where = f"workflows[{i}]"
        if workflow.name in seen:
            raise ConfigError(f"{where}.name", f"{workflow.name!r} is defined twice")
        seen.add(workflow.name)
        earlier: list[str] = []
        for j, step in enumerate(workflow.steps):
            at = f"{where}.steps[{j}]"
            if step.name in earlier:
                raise ConfigError(f"{at}.name", f"{step.name!r} is used by an earlier step")
            texts = [c.value for c in step.when]
            if isinstance(step, LLMStep):
                if step.model not in models:
                    raise ConfigError(
                        f"{at}.model",
                        f"names {step.model!r}, which no models: entry defines",
                        f"use one of: {', '.join(models)}",
                    )
                texts += [step.prompt, step.system or ""]
            for text in texts:
                for ref in _STEP_REF.findall(text) + re.findall(r"^steps\.([^.]+)\.output$", text):
                    if ref not in earlier:
                        raise ConfigError(
                            at,
                            f"refers to step {ref!r}, which does not come before it",
                            f"use one of: {', '.join(earlier) or '(no earlier step)'}",
                        )
            if isinstance(step, FunctionStep):
                module, _, name = step.function.partition(":")
                try:
                    target = getattr(importlib.import_module(module), name)
                except (ImportError, AttributeError) as exc:
                    raise ConfigError(
                        f"{at}.function",
                        f"cannot load {step.function!r}: {type(exc).__name__}: {exc}",
                        "give an importable module path and a function name, module.path:name",
                    ) from None
                if not callable(target):
                    raise ConfigError(f"{at}.function", f"{step.function!r} is not callable")
                try:
                    inspect.signature(target).bind("input", {}, **step.args)
                except TypeError as exc:
                    raise ConfigError(
                        f"{at}.args",
                        f"{step.function!r} cannot be called with these args ({exc})",
                        "a step function takes (input, outputs) and the step's args as "
                        "keyword arguments",
                    ) from None
                except ValueError:
                    pass  # a callable without a signature: find out when it runs
            earlier.append(step.name)
    wanted = config.workflow_query.workflow
    if wanted is not None and wanted not in seen:
        raise ConfigError(
            "workflow_query.workflow",
            f"names {wanted!r}, which no workflows: entry defines",
            f"use one of: {', '.join(seen) or '(none defined)'}",
        )


def mask_url(url: str) -> str:
    """A URL as `check` prints it: a password in its userinfo replaced by `****`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:****@{host}").geturl()


def mask(secret: SecretStr | str | None) -> str:
    """A secret as `check` prints it: never more than its last four characters."""
    if secret is None:
        return "(not set)"
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if len(value) >= 16:
        return f"****{value[-4:]} ({len(value)} chars)"
    return f"**** ({len(value)} chars)"
