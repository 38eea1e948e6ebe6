"""One configuration system: ``recengine.toml`` + environment overrides + named profiles.

Precedence, highest first: explicit keyword arguments (CLI flags) → ``RECENGINE_<SECTION>__<KEY>`` environment
variables → the TOML file (``--config FILE``, else ``$RECENGINE_CONFIG``, else ``./recengine.toml`` when present)
→ the profile's defaults → the defaults written here.

Only ``cli.py`` and ``api/app.py`` build a :class:`Settings`; everything below them gets the narrow section it needs.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from recengine.engines import ENGINE_NAMES, FALLBACK_ORDER
from recengine.errors import ConfigError

Profile = Literal["dev", "test", "prod"]


class _Section(BaseModel):
    # Unknown keys are typos: refuse them instead of silently ignoring a setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(_Section):
    dir: Path = Path("data/demo")
    """Processed data set used by ``demo``, ``serve`` (history seeding) and as the default ``--data``."""
    on_invalid: Literal["fail", "drop"] = "drop"
    """What to do with a row that fails validation: stop with an error, or drop it and report it."""
    min_rating: float | None = None
    """Implicit-feedback threshold: rows with a rating below it are not interactions. None keeps every row."""
    user_core: int = Field(default=0, ge=0, le=1000)
    item_core: int = Field(default=0, ge=0, le=1000)
    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    temporal_valid_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    temporal_test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    dedupe: Literal["none", "consecutive", "all"] = "none"
    """Duplicate (user, item) events: keep all, drop immediate repeats, or keep the first only."""


class PopularitySettings(_Section):
    enabled: bool = True
    window_days: float | None = Field(default=None, gt=0)
    """Count only interactions newer than this many days before the newest one; None counts everything."""


class EaseSettings(_Section):
    enabled: bool = True
    lambdas: list[float] = Field(default_factory=lambda: [30.0, 100.0, 300.0, 1000.0])
    """L2 strengths tried (half-decade steps; each costs one Cholesky); the best on validation NDCG@10 is kept."""
    max_items: int = Field(default=20_000, ge=10, le=200_000)
    """Refuse catalogues larger than this: fitting holds three dense items² float32 matrices (Gram, copy, best λ)."""

    @field_validator("lambdas")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("must be a non-empty list of positive numbers")
        return v


class TransformerSettings(_Section):
    enabled: bool = True
    max_len: int | Literal["auto"] = Field(default="auto")
    """Items of history the model reads; "auto" = p90 of training sequence lengths, rounded up, within [20, 200]."""
    d_model: int = Field(default=64, ge=8, le=1024)
    n_layers: int = Field(default=2, ge=1, le=12)
    n_heads: int = Field(default=2, ge=1, le=16)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    """On embeddings and residual branches."""
    block: Literal["pre_ln", "post_ln", "gated"] = "pre_ln"
    """Transformer block: pre-LayerNorm (a LayerNorm before each branch and one after the last block);
    post-LayerNorm with a LayerNorm over the summed input embeddings (BERT's and RecBole's layout); or pre-LN with
    gated residuals and a SwiGLU MLP (LiGR-style, as in eSASRec)."""
    attn_dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    """On the attention weights."""
    lr: float | None = Field(default=2e-3, gt=0.0, le=1.0)
    """Overrides training.lr for this engine (None = use training.lr)."""
    warmup_steps: int | None = Field(default=100, ge=0)
    """Overrides training.warmup_steps for this engine (None = use training.warmup_steps)."""
    patience: int | None = Field(default=10, ge=1, le=1000)
    """Overrides training.patience for this engine (None = use training.patience)."""
    batching: Literal["by_length", "random"] | None = "random"
    """Overrides training.batching for this engine (None = use training.batching)."""
    batch_size: int | None = Field(default=256, ge=1, le=65_536)
    """Overrides training.batch_size for this engine (None = use training.batch_size): histories per batch."""
    batch_tokens: int | None = Field(default=8192, ge=1)
    """Overrides training.batch_tokens for this engine (None = use training.batch_tokens): padded positions per
    batch."""
    average_epochs: float | None = Field(default=1.0, gt=0, le=1000)
    """Overrides training.average_epochs for this engine (None = use training.average_epochs)."""
    positions: Literal["from_oldest", "from_newest"] = "from_oldest"
    """Learned positions counted from the oldest kept item, or back from the newest one."""
    loss: Literal["ce", "sampled_softmax", "bce"] = "ce"
    n_negatives: int = Field(default=256, ge=1, le=100_000)
    """Negatives per step for the sampled losses."""
    ahead: int = Field(default=3, ge=1, le=20)
    """Train each position to predict the next ``ahead`` items, not the next one only (needs loss "ce"): the j-th
    item ahead has weight ``ahead_decay ** (j - 1)`` in the position's target distribution. Evaluation still asks
    for the next item only."""
    ahead_decay: float = Field(default=0.5, gt=0.0, le=1.0)
    inference_threads: int = Field(default=1, ge=1, le=64)

    @field_validator("max_len")
    @classmethod
    def _max_len(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 2 <= v <= 512:
            raise ValueError('must be between 2 and 512, or "auto"')
        return v

    @model_validator(mode="after")
    def _ahead_needs_full_softmax(self) -> TransformerSettings:
        if self.ahead > 1 and self.loss != "ce":
            raise ValueError(f'ahead = {self.ahead} needs loss = "ce" (the full softmax), not {self.loss!r}')
        return self


class NeuralSettings(_Section):
    enabled: bool = True
    d_model: int = Field(default=64, ge=8, le=1024)
    max_len: int = Field(default=50, ge=1, le=512)
    temperature: float = Field(default=0.05, gt=0.0, le=10.0)
    feature_dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    """Share of item occurrences trained without their id embedding, so the tower learns to embed from metadata."""
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    """Dropout on the user tower's history vectors."""
    title_buckets: int = Field(default=4096, ge=16, le=1_000_000)
    full_softmax_items: int = Field(default=20_000, ge=0)
    """Catalogues up to this size train against every item at each step (exact softmax). Larger ones use the
    batch's own targets plus ``n_uniform_negatives``, with log-Q correction."""
    n_uniform_negatives: int = Field(default=4096, ge=0, le=100_000)
    """Uniform negatives added to the in-batch ones (sampled softmax only), so the long tail is sampled too."""
    patience: int | None = Field(default=10, ge=1, le=1000)
    """Overrides training.patience for this engine (None = use training.patience)."""
    ann_threshold: int = Field(default=50_000, ge=0)
    """Catalogues with more items than this are served from an ANN index instead of an exact matrix product."""
    ann_kind: Literal["hnsw", "ivf"] = "ivf"
    """The ANN index for catalogues above ``ann_threshold`` (benchmarks/results/ann.md compares the two)."""
    inference_threads: int = Field(default=1, ge=1, le=64)


class RankerSettings(_Section):
    """The ranking stage (engines/ranker.py): LightGBM lambdarank over the union of the base engines' candidates."""

    enabled: bool = True
    base_engines: list[str] = Field(default_factory=lambda: ["transformer", "neural", "ease", "popularity"])
    """Engines whose CURRENT models (trained on the same data set) supply candidates and score features; those
    without one are skipped, and training fails when none is left."""
    candidates: int = Field(default=100, ge=1, le=2000)
    """Top-M items taken from each base engine per user (history left out); the union is what the ranker orders."""
    max_users: int | None = Field(default=10_000, ge=10)
    """Validation users the ranker learns from (a seeded sample when there are more); None takes every one."""
    folds: int = Field(default=3, ge=2, le=10)
    """Cross-validation folds over validation users, for the grid and the number of boosting rounds."""
    num_leaves: list[int] = Field(default_factory=lambda: [7, 31])
    """Tree sizes tried (the grid is num_leaves × learning_rates; each point costs ``folds`` trainings)."""
    learning_rates: list[float] = Field(default_factory=lambda: [0.05, 0.1])
    max_rounds: int = Field(default=300, ge=1, le=10_000)
    """Boosting rounds at most; each fold stops early after ``early_stopping`` rounds without a better NDCG@10."""
    early_stopping: int = Field(default=20, ge=1, le=1000)
    min_data_in_leaf: int = Field(default=20, ge=1)
    seed: int = 0
    training_threads: int | None = Field(default=None, ge=1, le=256)
    """LightGBM's threads while training; None = every core (on a machine shared with other work, fewer threads
    are faster: OpenMP threads spin while waiting for a core)."""
    inference_threads: int = Field(default=1, ge=1, le=64)
    """LightGBM's threads per request (torch's are the base engines' own ``inference_threads``)."""

    @field_validator("base_engines")
    @classmethod
    def _known_bases(cls, v: list[str]) -> list[str]:
        allowed = [n for n in ENGINE_NAMES if n != "ranker"]
        unknown = [n for n in v if n not in allowed]
        if not v or unknown or len(set(v)) != len(v):
            raise ValueError(f"must list distinct engines among {', '.join(allowed)} (got {v})")
        return v

    @field_validator("num_leaves", "learning_rates")
    @classmethod
    def _grid(cls, v: list[Any]) -> list[Any]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("must be a non-empty list of positive numbers")
        return v


class EnginesSettings(_Section):
    popularity: PopularitySettings = Field(default_factory=PopularitySettings)
    ease: EaseSettings = Field(default_factory=EaseSettings)
    transformer: TransformerSettings = Field(default_factory=TransformerSettings)
    neural: NeuralSettings = Field(default_factory=NeuralSettings)
    ranker: RankerSettings = Field(default_factory=RankerSettings)


# One section per row of the engine table, in its order (the runtime switches are listed from the table).
if tuple(EnginesSettings.model_fields) != ENGINE_NAMES:
    raise ConfigError(f"EnginesSettings must have one section per engine of engines.ENGINES: {ENGINE_NAMES}")


class TrainingSettings(_Section):
    seed: int = 42
    epochs: int = Field(default=200, ge=1, le=10_000)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    batch_tokens: int | None = Field(default=2048, ge=1)
    """Sequence models: a batch also closes at this many (padded) positions, so long histories make more steps."""
    batching: Literal["by_length", "random"] = "by_length"
    """Sequence models: batches of similar-length histories (least padding), or drawn from every length at once
    (each step an unbiased sample of the training targets)."""
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    """After warm-up: constant; cosine decay to 0 over ``epochs``; or "plateau": multiply by ``plateau_factor``
    whenever validation NDCG@10 has not improved for ``plateau_patience`` epochs (needs no epoch budget)."""
    plateau_patience: int = Field(default=3, ge=1, le=1000)
    plateau_factor: float = Field(default=0.3, gt=0.0, lt=1.0)
    average_epochs: float | None = Field(default=None, gt=0, le=1000)
    """Validate, select and export an exponential moving average of the weights over about this many epochs
    (None = the raw weights)."""
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float = Field(default=1.0, ge=0.0)
    patience: int = Field(default=5, ge=1, le=1000)
    """Epochs without a better validation NDCG@10 before training stops."""
    valid_users: int | None = Field(default=10_000, ge=1)
    """Validate each epoch on this fixed, evenly spread subset of users (None = all) to keep validation cheap."""
    max_minutes: float | None = Field(default=None, gt=0)
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(default=1, ge=1)
    precision: str = "32-true"
    num_threads: int | None = Field(default=None, ge=1, le=256)
    tracking_uri: str | None = None
    """MLflow tracking store; None means a local file store under the artifacts folder (works offline)."""
    experiment: str = "recengine"
    wandb: bool = False
    promotion_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    """``recengine retrain`` promotes a challenger only if its validation NDCG@10 ≥ the champion's minus this."""
    datasets_dir: Path | None = None
    """Where ``recengine retrain`` writes its data set versions (and ``CURRENT``); None: ``datasets/`` in the
    artifacts folder. Point ``data.dir`` at it for the server to seed histories from the newest merged one."""
    keep_datasets: int = Field(default=3, ge=1, le=1000)
    """Data set versions ``recengine retrain`` keeps (the newest ones; the one ``CURRENT`` names is never removed)."""
    retrain_lock_ttl_s: int = Field(default=600, ge=10, le=86_400)
    """The Redis retraining lock's time to live, renewed while a run is alive: how long a crashed run's lock lasts."""

    def with_overrides(self, **values: Any) -> TrainingSettings:
        """A copy with an engine's own overrides applied; ``None`` means "keep the training value"."""
        return self.model_copy(update={k: v for k, v in values.items() if v is not None})


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65_535)
    workers: int = Field(default=1, ge=1, le=64)
    artifacts_dir: Path = Path("artifacts")
    default_k: int = Field(default=10, ge=1, le=1000)
    max_k: int = Field(default=100, ge=1, le=10_000)
    max_batch_events: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    engine_timeout_ms: float = Field(default=50.0, gt=0, le=60_000)
    inference_workers: int = Field(default=2, ge=1, le=64)
    admin_api_key: SecretStr | None = None
    """Key of the admin API (``X-API-Key``); None disables it. Printed as ``**********`` everywhere."""
    write_api_key: SecretStr | None = None
    """Key that writes (catalogue items, events) must send as ``X-API-Key``; None leaves writes open. Reads stay
    open either way."""
    history_max_len: int = Field(default=200, ge=1, le=10_000)
    events_db: Path | None = None
    """SQLite event log; None puts ``events.sqlite3`` in the artifacts folder."""
    events_backend: Literal["sqlite", "redis"] = "sqlite"
    max_unmerged_events: int = Field(default=1_000_000, ge=0)
    """Events the log may hold that are not yet merged into a data set (``recengine data merge-events``); past
    it, ``POST /events`` answers 503 with Retry-After and stores nothing, instead of growing without bound (or
    evicting). 0: no cap (the log grows until it is merged; not for Redis, whose memory is the limit)."""
    events_retain_merged_s: float = Field(default=3600.0, ge=0, le=30 * 86_400)
    """Keep merged events this long (replay, debugging) before they are trimmed; unmerged ones are never trimmed."""
    events_trim_every: int = Field(default=1000, ge=1, le=1_000_000)
    """The writer trims merged events once per this many appended (a cheap, incremental bound)."""
    impressions: bool = True
    """Record an impression per answer (recommendation id, user, engine, model version, experiment arm, items) and
    attribute events to them: the experiment readout's data. Off: answers still carry a recommendation_id."""
    impressions_db: Path | None = None
    """SQLite impression store (``events_backend = "sqlite"``); None puts ``impressions.sqlite3`` beside the event
    log. With the Redis event log, impressions live in that Redis."""
    impressions_retain_s: float = Field(default=7 * 86_400.0, ge=60, le=90 * 86_400)
    """Impressions and attributions older than this are deleted: the readout covers this window."""
    attribution_window_s: float = Field(default=1800.0, gt=0, le=7 * 86_400)
    """An event for an item shown to the same user at most this long before counts as attributed (and as that
    answer's next event for online HR@K) even without a recommendation_id."""
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_reset_s: float = Field(default=10.0, gt=0, le=3600)
    reload_poll_s: float = Field(default=5.0, ge=0, le=3600)
    """How often each worker checks the CURRENT pointers, shared overrides and Redis recovery; 0 = never."""

    @model_validator(mode="after")
    def _k_bounds(self) -> ServingSettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if self.attribution_window_s > self.impressions_retain_s:
            raise ValueError(
                f"attribution_window_s ({self.attribution_window_s:g}) must not exceed impressions_retain_s "
                f"({self.impressions_retain_s:g}): impressions would be gone before their window closes"
            )
        if 0 < self.max_unmerged_events < self.max_batch_events:
            raise ValueError(
                f"max_unmerged_events ({self.max_unmerged_events}) must be at least max_batch_events "
                f"({self.max_batch_events}): a full batch could never be stored"
            )
        return self

    @property
    def events_db_path(self) -> Path:
        """The SQLite event log: ``events_db``, else ``events.sqlite3`` in the artifacts folder."""
        return self.events_db or Path(self.artifacts_dir) / "events.sqlite3"

    @property
    def impressions_db_path(self) -> Path:
        """The SQLite impression store: ``impressions_db``, else ``impressions.sqlite3`` beside the event log."""
        return self.impressions_db or self.events_db_path.with_name("impressions.sqlite3")


def _interleave_pair(engines: list[str]) -> list[str]:
    unknown = [e for e in engines if e not in ENGINE_NAMES]
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}: expected {', '.join(ENGINE_NAMES)}")
    if len(engines) not in (0, 2) or len(set(engines)) != len(engines):
        raise ValueError("two different engines to interleave, or [] for none (split mode)")
    return engines


_INTERLEAVE_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"enum": list(ENGINE_NAMES)},
    "anyOf": [{"maxItems": 0}, {"minItems": 2, "maxItems": 2}],
    "uniqueItems": True,
}


class CatalogueSettings(_Section):
    backend: Literal["auto", "sqlite", "redis"] = "auto"
    """Where item records live: "auto" is Redis when ``cache.redis_url`` is set, else SQLite."""
    db: Path | None = None
    """SQLite catalogue; None puts ``catalogue.sqlite3`` in the artifacts folder. Replicas on one machine share it."""
    redis_prefix: str = Field(default="recengine:catalogue", min_length=1, max_length=100)
    check_interval_ms: float = Field(default=0.0, ge=0, le=60_000)
    """How often a worker asks the store whether the catalogue changed: 0 = before every request (a change counts
    everywhere from the next request on); more trades that for fewer checks."""
    max_batch_items: int = Field(default=1000, ge=1, le=100_000)
    """Items per ``PUT /api/v1/items``."""

    def db_path(self, artifacts_dir: Path) -> Path:
        return self.db or Path(artifacts_dir) / "catalogue.sqlite3"


class ExperimentSettings(_Section):
    name: str = Field(default="default", min_length=1, max_length=128)
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    """Engine name → traffic share (≥ 0); empty, or all 0, means no experiment (rules decide). The first arm is
    the control of the readout."""
    interleave: Annotated[list[str], AfterValidator(_interleave_pair), WithJsonSchema(_INTERLEAVE_SCHEMA)] = Field(
        default_factory=list
    )
    """Two different engines: the experiment runs in ``interleave`` mode — every known user's answer interleaves
    their lists (team draft) and credits each item to the engine that placed it; ``weights`` is then not used.
    Empty (the default): ``split`` mode, each user gets one arm of ``weights``. One self-contained key, so that
    switching the mode can never contradict another setting."""

    @property
    def mode(self) -> Literal["split", "interleave"]:
        return "interleave" if self.interleave else "split"


class RoutingSettings(_Section):
    short_history: int = Field(default=5, ge=0, le=10_000)
    """Histories shorter than this go to the neural engine; longer ones to the transformer."""
    fallback: list[str] = Field(default_factory=lambda: list(FALLBACK_ORDER))
    experiment: ExperimentSettings = Field(default_factory=ExperimentSettings)


class CacheSettings(_Section):
    redis_url: str | None = None
    """None uses the in-process cache; ``redis://host:port/db`` shares one across replicas."""
    ttl_s: float = Field(default=300.0, ge=0, le=86_400 * 7)
    max_entries: int = Field(default=100_000, ge=0)
    redis_timeout_ms: float = Field(default=50.0, gt=0, le=10_000)
    retry_after_s: float = Field(default=2.0, gt=0, le=600)
    """After a Redis failure, serve from memory for this long before trying Redis again."""

    @field_serializer("redis_url", when_used="json")
    def _redact_password(self, url: str | None) -> str | None:
        return redact_url(url)


class ObservabilitySettings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"
    metrics: bool = True


_PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {},
    "test": {"observability": {"log_level": "WARNING"}, "training": {"epochs": 3}},
    "prod": {"observability": {"log_format": "json"}},
}


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file, with the profile's defaults underneath it."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None, profile: str | None) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.profile = profile

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.path is not None:
            data = load_toml(self.path)
        profile = self.profile or os.environ.get("RECENGINE_PROFILE") or data.get("profile") or "dev"
        if profile not in _PROFILE_DEFAULTS:
            raise ConfigError(f"profile = {profile!r}: expected one of dev, test, prod")
        merged = _deep_merge(_PROFILE_DEFAULTS[profile], data)
        merged["profile"] = profile
        return merged


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class Settings(BaseSettings):
    """The root of every setting; one attribute per section of ``recengine.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="RECENGINE_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    profile: Profile = "dev"
    data: DataSettings = Field(default_factory=DataSettings)
    engines: EnginesSettings = Field(default_factory=EnginesSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    catalogue: CatalogueSettings = Field(default_factory=CatalogueSettings)

    @model_validator(mode="after")
    def _refuse_insecure_prod(self) -> Settings:
        if self.profile == "prod":
            key = self.serving.admin_api_key
            if key is not None and len(key.get_secret_value()) < 16:
                raise ValueError("serving.admin_api_key must be at least 16 characters in the prod profile")
            write_key = self.serving.write_api_key
            if write_key is not None and len(write_key.get_secret_value()) < 16:
                raise ValueError("serving.write_api_key must be at least 16 characters in the prod profile")
            if self.observability.log_format != "json":
                raise ValueError("observability.log_format must be 'json' in the prod profile")
        return self

    # Where ``load_settings`` found the TOML file and which profile it asked for (set on a per-load subclass).
    _source_path: ClassVar[Path | None] = None
    _source_profile: ClassVar[str | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls, cls._source_path, cls._source_profile)


def resolve_config_path(path: Path | None) -> Path | None:
    if path is not None:
        return path
    env = os.environ.get("RECENGINE_CONFIG")
    if env:
        return Path(env)
    default = Path("recengine.toml")
    return default if default.is_file() else None


def redact_url(url: str | None) -> str | None:
    """``url`` with its password replaced by ``****`` (for printing: config dumps, logs)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:****@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def startup_warnings(settings: Settings) -> list[str]:
    """Settings that are allowed but unsafe where they are: said once when a server starts."""
    warnings = []
    url = settings.cache.redis_url
    if settings.profile == "prod" and url and urlsplit(url).password is None:
        warnings.append(
            "cache.redis_url has no password in the prod profile: anyone who reaches that Redis can read and "
            "change cached answers, histories and events (use redis://:PASSWORD@host:port/db or rediss://)"
        )
    if settings.profile == "prod" and settings.serving.write_api_key is None:
        warnings.append(
            "serving.write_api_key is not set in the prod profile: anyone who reaches the API can add, change and "
            "retire catalogue items and post events"
        )
    if settings.serving.events_backend == "redis" and settings.serving.max_unmerged_events == 0:
        warnings.append(
            "serving.max_unmerged_events = 0 (no cap) with the Redis event log: the stream grows in Redis memory until "
            "it is merged (recengine data merge-events); set a cap so that appends are refused (503) first"
        )
    return warnings


def load_settings(path: Path | None = None, profile: str | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning every validation problem into one readable :class:`ConfigError`."""
    resolved = resolve_config_path(path)

    # pydantic-settings builds its sources from the class, so the file and profile of this load live in a subclass.
    from_file = type("Settings", (Settings,), {"_source_path": resolved, "_source_profile": profile})
    try:
        loaded: Settings = from_file(**overrides)
        return loaded
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, resolved)) from None


def format_validation_error(exc: ValidationError, path: Path | None = None) -> str:
    """One line per problem: ``where: key = value: reason``."""
    where = str(path) if path else "settings"
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown setting"
        lines.append(f"{where}: {key}{shown}: {reason}")
    return "\n".join(lines)


# Settings that an operator may change at run time (PATCH /api/v1/admin/config); everything else needs a restart.
RUNTIME_KEYS: tuple[str, ...] = (
    *(f"engines.{name}.enabled" for name in ENGINE_NAMES),
    "routing.short_history",
    "routing.fallback",
    "routing.experiment.name",
    "routing.experiment.weights",
    "routing.experiment.interleave",
    "cache.ttl_s",
    "serving.engine_timeout_ms",
)
