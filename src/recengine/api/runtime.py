"""The runtime-changeable settings (``RUNTIME_KEYS``): read, patch with validation, and share across replicas.

A patch is validated exactly like the config file (the whole ``Settings`` model runs on the result), so an
operator cannot set at run time what ``recengine.toml`` would refuse. With Redis configured, the overrides are
stored there and every worker and replica applies them on its next sync, so they all route alike.
"""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any

import orjson
from pydantic import ConfigDict, TypeAdapter, ValidationError

from recengine.engines import ENGINE_NAMES
from recengine.serving.routing import RuntimeConfig
from recengine.settings import RUNTIME_KEYS, Settings

OVERRIDES_KEY = "recengine:runtime_overrides"


class PatchError(ValueError):
    """A patch names a key that is not runtime-changeable, or a value that fails validation."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
        self.errors = errors


def runtime_config(settings: Settings) -> RuntimeConfig:
    return RuntimeConfig(
        enabled={name: bool(getattr(settings.engines, name).enabled) for name in ENGINE_NAMES},
        short_history=settings.routing.short_history,
        fallback=tuple(settings.routing.fallback),
        experiment_name=settings.routing.experiment.name,
        experiment_weights=dict(settings.routing.experiment.weights),
        experiment_interleave=tuple(settings.routing.experiment.interleave),
        cache_ttl_s=settings.cache.ttl_s,
        engine_timeout_ms=settings.serving.engine_timeout_ms,
    )


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


def current_values(settings: Settings) -> dict[str, Any]:
    data = settings.model_dump(mode="json")
    return {key: _get(data, key) for key in RUNTIME_KEYS}


def flatten_patch(patch: Any) -> dict[str, Any]:
    """Nested (``{"routing": {"short_history": 3}}``) or dotted (``{"routing.short_history": 3}``) →
    dotted."""
    if not isinstance(patch, dict):
        raise PatchError([{"loc": "body", "msg": "expected a JSON object of settings"}])
    out: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in RUNTIME_KEYS:
                # Checked where it stands: a key given twice (dotted and nested) has each value checked.
                try:
                    out[path] = _strict_value(path, value)
                except ValidationError as exc:
                    errors.extend({"loc": f"body.{path}", "msg": e["msg"]} for e in exc.errors())
            elif isinstance(value, dict) and any(k.startswith(path + ".") for k in RUNTIME_KEYS):
                if not value:
                    errors.append({"loc": f"body.{path}", "msg": "empty object; name a setting inside it"})
                walk(value, path + ".")
            else:
                errors.append({"loc": f"body.{path}", "msg": "not a runtime-changeable setting"})

    walk(patch, "")
    if errors:
        raise PatchError(errors)
    if not out:
        raise PatchError([{"loc": "body", "msg": f"empty patch; changeable: {', '.join(RUNTIME_KEYS)}"}])
    return out


def apply_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """A new, fully validated Settings with the dotted overrides applied; raises PatchError."""
    data = copy.deepcopy(settings.model_dump(mode="python"))
    for dotted, value in overrides.items():
        if dotted not in RUNTIME_KEYS:
            raise PatchError([{"loc": f"body.{dotted}", "msg": "not a runtime-changeable setting"}])
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise PatchError(
            [{"loc": "body." + ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        ) from None


def encode_overrides(overrides: dict[str, Any]) -> bytes:
    return orjson.dumps(overrides, option=orjson.OPT_SORT_KEYS)


def decode_overrides(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else {}


@functools.cache
def _key_type(dotted: str, strict: bool = False) -> TypeAdapter[Any]:
    """One runtime key's type with the constraints the settings enforce (``strict``: no coercion)."""
    model: Any = Settings
    *parents, leaf = dotted.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    field = model.model_fields[leaf]
    annotation: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    return TypeAdapter(annotation, config=ConfigDict(strict=True) if strict else None)


def _key_schema(dotted: str) -> dict[str, Any]:
    schema: dict[str, Any] = _key_type(dotted).json_schema()
    return schema


def _strict_value(dotted: str, value: Any) -> Any:
    """The value as JSON typed it: "5" is not a number nor 1 a boolean here (the whole Settings model, which
    runs next, would coerce them). An integral float is an integer, as in JSON Schema."""
    if isinstance(value, float) and value.is_integer() and _key_schema(dotted).get("type") == "integer":
        value = int(value)
    return _key_type(dotted, strict=True).validate_python(value)


def patch_schema() -> dict[str, Any]:
    """The body ``PATCH /api/v1/admin/config`` accepts: every runtime key dotted, or nested, and nothing else."""
    nested: dict[str, Any] = {}
    for dotted in RUNTIME_KEYS:
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {}).setdefault("properties", {})
        node[leaf] = _key_schema(dotted)

    def objects(tree: dict[str, Any]) -> dict[str, Any]:
        return {
            name: (
                {
                    "type": "object",
                    "properties": objects(sub["properties"]),
                    "additionalProperties": False,
                    "minProperties": 1,
                }
                if "properties" in sub and "type" not in sub
                else sub
            )
            for name, sub in tree.items()
        }

    return {
        "type": "object",
        "properties": {**{k: _key_schema(k) for k in RUNTIME_KEYS}, **objects(nested)},
        "additionalProperties": False,
        "minProperties": 1,
    }
