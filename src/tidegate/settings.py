"""The settings of a gateway process, as validated objects: what every part may read.

`tidegate.config` builds a `Config` from YAML and the environment; everything else only reads
it. Each provider declares its own `models:` settings by extending `DeploymentSettings` (or
`HttpDeploymentSettings`), so a field that does not belong to an entry's provider is refused.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)

from tidegate.descriptors import ProviderDescriptor

#: (field, problem, fix): what a settings model says is wrong with an entry.
ConfigProblem = tuple[str, str, str | None]


class Frozen(BaseModel):
    """A frozen settings model that refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Timeouts(Frozen):
    """Seconds each phase of an upstream call may take; each is named for what it bounds."""

    connect: PositiveFloat = 5.0
    first_byte: PositiveFloat = 60.0
    idle: PositiveFloat = 60.0
    total: PositiveFloat = 600.0


class DeploymentSettings(Frozen):
    """What every `models:` entry has, whatever its provider: its name, its provider, its
    deadlines and its place in a group of deployments. Each provider extends this with the
    settings it declares (`Provider.settings`); a field no provider of the entry declares is
    refused as an unknown setting."""

    name: str = Field(min_length=1)
    provider: str
    timeouts: Timeouts = Timeouts()
    # Several entries with one name form a group of deployments of that model.
    priority: int = 0
    weight: float = Field(default=1.0, gt=0)
    retries: int = Field(default=0, ge=0, le=10)
    max_in_flight: PositiveInt | None = None
    fallbacks: tuple[str, ...] = ()
    #: The answer's length limit sent when a request gives none (None: the upstream's own).
    max_tokens: PositiveInt | None = None

    @field_validator("name")
    @classmethod
    def _name_is_plain(cls, v: str) -> str:
        if v != v.strip() or any(c in v for c in "\r\n\t"):
            raise ValueError("must not contain surrounding spaces or control characters")
        return v

    @property
    def upstream_model(self) -> str:
        """The model id sent upstream (the client-facing name unless a provider says else)."""
        return self.name

    def secrets(self) -> list[str]:
        """The secret values of this entry (keys, header values, URL passwords)."""
        return []

    def problems(self) -> list[ConfigProblem]:
        """What is wrong with the entry beyond field types: rules across fields."""
        return []


class HttpDeploymentSettings(DeploymentSettings):
    """Settings of a provider reached over HTTP: where, with which key, which upstream model."""

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url_is_http(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{v!r} is not an http(s) URL such as https://api.example.com/v1")
        return v.rstrip("/")

    @property
    def upstream_model(self) -> str:
        """The model id sent upstream (defaults to the client-facing name)."""
        return self.model or self.name

    def secrets(self) -> list[str]:
        values = [self.api_key.get_secret_value()] if self.api_key else []
        values += [h.get_secret_value() for h in self.headers.values()]
        password = urlsplit(self.base_url).password if self.base_url else None
        if password:
            values += [password, unquote(password)]  # as written, and as sent
        return values


class CooldownConfig(Frozen):
    """When a failing deployment is skipped, and for how long."""

    enabled: bool = True
    failures: PositiveInt = 3
    window: PositiveFloat = 30.0
    seconds: PositiveFloat = 5.0
    max_seconds: PositiveFloat = 300.0


class RoutingConfig(Frozen):
    """Retry, failover and commit policy, shared by every model."""

    max_attempts: PositiveInt = 4
    budget_seconds: PositiveFloat = 60.0
    backoff_seconds: PositiveFloat = 0.25
    max_backoff_seconds: PositiveFloat = 5.0
    commit_after: PositiveFloat = 15.0
    ping_interval: PositiveFloat = 15.0
    cooldown: CooldownConfig = CooldownConfig()


class TaskPrompt(Frozen):
    """A coding task's prompts; a field left out keeps the built-in default (prompts.py)."""

    system: str | None = None
    template: str | None = None


class TasksConfig(Frozen):
    """The prompts of the `/stream-ask` tasks, by name (an unknown name is refused)."""

    ask: TaskPrompt = TaskPrompt()
    generate: TaskPrompt = TaskPrompt()
    fix: TaskPrompt = TaskPrompt()
    explain: TaskPrompt = TaskPrompt()
    review: TaskPrompt = TaskPrompt()


class StreamAskConfig(Frozen):
    """Settings of the `/stream-ask` and `/ask` endpoints: the default model, the task
    prompts, and the conversations the gateway keeps per `session_id`."""

    model: str | None = None
    tasks: TasksConfig = TasksConfig()
    #: The most history a session sends upstream, in tokens estimated as characters / 4.
    session_budget_tokens: PositiveInt = 8000
    #: Seconds a session is kept after its last answer.
    session_ttl: PositiveFloat = 86400.0


class KeyPolicy(Frozen):
    """What one client key may do: which models, and its limits (None: unlimited).

    The same policy comes from a static key of the config (`auth.api_keys: [{key, rpm, ...}]`)
    or from a managed key in the database; `limits.py` enforces it."""

    #: Client-facing model names the key may use (empty: every model).
    models: tuple[str, ...] = ()
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_streams: PositiveInt | None = None
    #: Money (in the currency of `prices`) the key may spend per `period`.
    budget: PositiveFloat | None = None
    period: Literal["day", "week", "month"] = "month"


class ClientKey(KeyPolicy):
    """A client key with the user it belongs to, a name for the logs, and its policy."""

    key: SecretStr
    user: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = Field(default=None, min_length=1, max_length=200)

    def policy(self) -> KeyPolicy:
        """The key's policy alone."""
        return KeyPolicy(**{f: getattr(self, f) for f in KeyPolicy.model_fields})


class Price(Frozen):
    """What one model costs, per million tokens of each kind (cache and reasoning tokens
    default to the input and output prices)."""

    input: NonNegativeFloat = 0.0
    output: NonNegativeFloat = 0.0
    cache_read: NonNegativeFloat | None = None
    cache_write: NonNegativeFloat | None = None


class AuthConfig(Frozen):
    """Client keys (plain, or `{key, user, name}`) and admin keys.

    With client keys set, every endpoint but the health checks requires one. `/admin/` routes
    require an admin key whenever any key is configured; with no keys at all they are open.
    """

    api_keys: tuple[SecretStr | ClientKey, ...] = ()
    admin_keys: tuple[SecretStr, ...] = ()
    #: Seconds a managed key lookup (found or not) is remembered in the process; a change made
    #: elsewhere without a shared state (`state: memory`) is seen after at most this long.
    managed_cache_seconds: float = Field(default=5.0, ge=0, le=300)


class LimitsConfig(Frozen):
    """Bounds on what a client may send and how long it may take (checked before its key is),
    and on what an upstream may make the gateway hold."""

    max_body_bytes: PositiveInt = 10 * 1024 * 1024
    #: The request line and all header lines of one request, in bytes.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=8, le=10_000)
    #: Seconds from a connection's start (or a request's first byte) to the end of its headers.
    header_timeout: PositiveFloat = 10.0
    #: Seconds to receive a whole request body, once the app starts reading it.
    body_timeout: PositiveFloat = 30.0
    max_connections: PositiveInt = 10_000
    #: The largest SSE event or NDJSON line an upstream may send (a line that never ends is
    #: refused once it passes this), and the largest whole (non-streaming) answer, inflated.
    max_event_bytes: PositiveInt = 1024 * 1024
    max_response_bytes: PositiveInt = 10 * 1024 * 1024
    #: Seconds a last write to a client that has stopped reading may take before it is dropped.
    write_timeout: PositiveFloat = 30.0


class HttpConfig(Frozen):
    """The pooled upstream HTTP client of the request path: `builtin` (the default),
    tidegate's own HTTP/1.1 client on asyncio protocols and httptools (providers/h1client.py),
    or `aiohttp`'s."""

    client: Literal["aiohttp", "builtin"] = "builtin"
    pool_size: PositiveInt = 512
    keepalive_seconds: PositiveFloat = 30.0


class ServerConfig(Frozen):
    """How the server stops: streams still open get `shutdown_grace` seconds to finish, then
    end with an in-band error."""

    shutdown_grace: float = Field(default=10.0, ge=0, le=3600)


class StepCondition(Frozen):
    """When a workflow step runs: a test of an earlier output (or the input).

    `value` is a dotted name: `input` or `steps.<name>.output`; `op` one of `==`, `!=`,
    `contains`, `not_contains`, `matches` (a regular expression), `empty`, `not_empty`.
    """

    value: str = Field(pattern=r"^(input|steps\.[A-Za-z0-9_-]+\.output)$")
    op: Literal["==", "!=", "contains", "not_contains", "matches", "empty", "not_empty"]
    arg: str = ""


class LLMStep(Frozen):
    """A step answered by a model, streamed: a prompt template over `{input}` and earlier
    steps' `{steps.<name>.output}`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kind: Literal["llm"]
    model: str
    prompt: str = Field(min_length=1)
    system: str | None = None
    max_tokens: PositiveInt | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    when: tuple[StepCondition, ...] = ()


class FunctionStep(Frozen):
    """A step computed by a Python callable (`module.path:function`), sync or async, returning
    or yielding text; it is called as `function(input, outputs, **args)`, `outputs` the earlier
    steps' texts by name."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kind: Literal["function"]
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    #: Keyword arguments for the function (its settings: a database path, a row limit, ...).
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: PositiveFloat = 60.0
    when: tuple[StepCondition, ...] = ()


class HTTPStep(Frozen):
    """A step answered by a service: POST the context as JSON to `url`, take the text at the
    dotted `field` of the JSON answer."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    field: str = "output"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout: PositiveFloat = 30.0
    when: tuple[StepCondition, ...] = ()


WorkflowStep = Annotated[LLMStep | FunctionStep | HTTPStep, Field(discriminator="kind")]


class WorkflowConfig(Frozen):
    """A named multi-step workflow, streamed with progress (docs/protocol.md)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    steps: tuple[WorkflowStep, ...] = Field(min_length=1)


class WorkflowQueryConfig(Frozen):
    """Which workflow `/workflow/query` (the seed's front-end protocol) runs."""

    workflow: str | None = None


class StreamsConfig(Frozen):
    """Resumable streams: how long a stream's events are kept after it ends, and how long a
    stream whose client left keeps generating for a reconnect."""

    retention: PositiveFloat = 300.0
    resume_grace: float = Field(default=0.0, ge=0, le=3600)


class FilesConfig(Frozen):
    """Server-side files a descriptor's `image_file` convertor may read: only below
    `allowed_dirs` (no symlinks, no `..`), at most `max_bytes` each."""

    allowed_dirs: tuple[str, ...] = ()
    max_bytes: PositiveInt = 5 * 1024 * 1024


class MetricsConfig(Frozen):
    """`GET /metrics` in Prometheus' format: on by default, behind an admin key unless
    `public` (for a scraper on a private network)."""

    enabled: bool = True
    public: bool = False


class LedgerConfig(Frozen):
    """The usage ledger: how often rows are written, instances heartbeat, and the reaper runs."""

    #: Seconds between two writes of the queued rows (or sooner, at `flush_rows` rows).
    flush_seconds: PositiveFloat = 0.5
    flush_rows: PositiveInt = 500
    #: Seconds between two heartbeats of this instance.
    heartbeat_seconds: PositiveFloat = 5.0
    #: An instance silent this long is gone: its `pending` rows become `interrupted`.
    stale_seconds: PositiveFloat = 30.0
    #: Seconds between two runs of the reaper (also run at start-up).
    reap_seconds: PositiveFloat = 15.0


class Config(Frozen):
    """The validated configuration of one gateway process."""

    models: tuple[DeploymentSettings, ...] = Field(min_length=1)
    stream_ask: StreamAskConfig = StreamAskConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    http: HttpConfig = HttpConfig()
    routing: RoutingConfig = RoutingConfig()
    server: ServerConfig = ServerConfig()
    workflows: tuple[WorkflowConfig, ...] = ()
    workflow_query: WorkflowQueryConfig = WorkflowQueryConfig()
    streams: StreamsConfig = StreamsConfig()
    #: Upstream APIs described as data (docs/providers.md); models name them in `provider:`.
    providers: tuple[ProviderDescriptor, ...] = ()
    #: Descriptor convertors written in Python, by name: `module.path:function`.
    convertors: dict[str, str] = Field(default_factory=dict)
    files: FilesConfig = FilesConfig()
    #: The Fernet key that encrypts per-user upstream keys and cached tokens in the shared
    #: state (`TIDEGATE_SECRET_KEY` when the file does not set it).
    secret_key: SecretStr | None = None
    metrics: MetricsConfig = MetricsConfig()
    #: Prices per client-facing model name (or deployment key), for the ledger and budgets.
    prices: dict[str, Price] = Field(default_factory=dict)
    #: Where shared state lives: `memory` (this process) or a `redis://` URL (all instances).
    state: str = "memory"
    #: The database of managed keys and the usage ledger: unset for `./tidegate.db` (SQLite,
    #: relative to the working directory), `sqlite:///path.db`, `postgresql://...`, or `off`
    #: (no database: static keys only, usage in the access log alone).
    database: str | None = None
    ledger: LedgerConfig = LedgerConfig()
    source: str = "built-in"

    @field_validator("convertors")
    @classmethod
    def _convertor_paths(cls, v: dict[str, str]) -> dict[str, str]:
        for name, target in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"convertor name {name!r} must be a plain identifier")
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", target):
                raise ValueError(f"convertor {name!r}: {target!r} is not module.path:function")
        return v

    @field_validator("state")
    @classmethod
    def _known_state(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{v!r} is neither memory nor a redis:// URL")
        return v

    @field_validator("database")
    @classmethod
    def _known_database(cls, v: str | None) -> str | None:
        if (
            v is not None
            and v != "off"
            and not v.startswith(
                (
                    "sqlite://",
                    "sqlite+aiosqlite://",
                    "postgresql://",
                    "postgres://",
                    "postgresql+asyncpg://",
                )
            )
        ):
            raise ValueError("use a sqlite:///path.db or a postgresql:// URL, or off")
        return v

    def model_names(self) -> list[str]:
        """Client-facing model names, each once, in file order."""
        return list(dict.fromkeys(m.name for m in self.models))

    def secrets(self) -> list[str]:
        """Every secret value in the configuration, for redaction: upstream keys, extra
        headers, client and admin keys, and passwords inside `base_url`s."""
        values = [v for m in self.models for v in m.secrets()]
        values += [
            (k.key if isinstance(k, ClientKey) else k).get_secret_value()
            for k in self.auth.api_keys
        ]
        values += [k.get_secret_value() for k in self.auth.admin_keys]
        values += [
            h.get_secret_value()
            for w in self.workflows
            for step in w.steps
            if isinstance(step, HTTPStep)
            for h in step.headers.values()
        ]
        values += [v for d in self.providers for v in d.secrets()]
        if self.secret_key is not None:
            values.append(self.secret_key.get_secret_value())
        if self.database is not None:
            password = urlsplit(self.database).password
            if password:
                values.append(password)
        return [v for v in values if len(v) >= 4]
