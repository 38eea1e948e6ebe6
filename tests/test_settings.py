from __future__ import annotations

from pathlib import Path

import pytest

from recengine.errors import ConfigError
from recengine.serving.routing import assign
from recengine.settings import RUNTIME_KEYS, Settings, load_settings, startup_warnings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recengine.toml"
    path.write_text(text)
    return path


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECENGINE_CONFIG", raising=False)
    s = load_settings()
    assert s.profile == "dev"
    assert s.cache.redis_url is None
    assert s.serving.default_k <= s.serving.max_k


def test_file_sections_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, "[engines.transformer]\nmax_len = 100\n[cache]\nttl_s = 5\n")
    s = load_settings(path)
    assert s.engines.transformer.max_len == 100
    assert s.cache.ttl_s == 5


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[engines.transformer]\nmax_len = 100\n")
    monkeypatch.setenv("RECENGINE_ENGINES__TRANSFORMER__MAX_LEN", "64")
    monkeypatch.setenv("RECENGINE_SERVING__PORT", "9001")
    s = load_settings(path)
    assert s.engines.transformer.max_len == 64
    assert s.serving.port == 9001


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[training]\nepochs = 7\n")
    monkeypatch.setenv("RECENGINE_CONFIG", str(path))
    assert load_settings().training.epochs == 7


def test_out_of_range_value_names_key_value_and_range(tmp_path: Path) -> None:
    path = write(tmp_path, "[engines.transformer]\nmax_len = 4096\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    msg = str(exc.value)
    assert "engines.transformer.max_len" in msg
    assert "4096" in msg
    assert "512" in msg
    assert str(path) in msg


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[cache]\nttl = 5\n")
    with pytest.raises(ConfigError, match=r"cache\.ttl.*unknown setting"):
        load_settings(path)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[cache\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(profile="test").training.epochs == 3
    assert load_settings(profile="prod").observability.log_format == "json"
    # The file's own values win over the profile's defaults.
    path = write(tmp_path, 'profile = "test"\n[training]\nepochs = 9\n')
    s = load_settings(path)
    assert (s.profile, s.training.epochs) == ("test", 9)
    monkeypatch.setenv("RECENGINE_PROFILE", "prod")
    assert load_settings().profile == "prod"
    with pytest.raises(ConfigError, match="profile"):
        load_settings(profile="staging")


def test_prod_refuses_insecure_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin_api_key"):
        load_settings(write(tmp_path, 'profile = "prod"\n[serving]\nadmin_api_key = "short"\n'))
    with pytest.raises(ConfigError, match="log_format"):
        load_settings(write(tmp_path, 'profile = "prod"\n[observability]\nlog_format = "console"\n'))
    # The same short key is accepted in development.
    key = load_settings(write(tmp_path, '[serving]\nadmin_api_key = "short"\n')).serving.admin_api_key
    assert key is not None and key.get_secret_value() == "short"


def test_cross_field_and_list_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="default_k"):
        load_settings(write(tmp_path, "[serving]\ndefault_k = 50\nmax_k = 10\n"))
    with pytest.raises(ConfigError, match="max_unmerged_events"):
        load_settings(write(tmp_path, "[serving]\nmax_unmerged_events = 10\nmax_batch_events = 100\n"))
    assert load_settings(write(tmp_path, "[serving]\nmax_unmerged_events = 0\n")).serving.max_unmerged_events == 0
    with pytest.raises(ConfigError, match="events_trim_every"):
        load_settings(write(tmp_path, "[serving]\nevents_trim_every = 0\n"))
    with pytest.raises(ConfigError, match="lambdas"):
        load_settings(write(tmp_path, "[engines.ease]\nlambdas = [-1.0]\n"))
    with pytest.raises(ConfigError, match="weights"):
        load_settings(write(tmp_path, "[routing.experiment]\nweights = { ease = -1.0 }\n"))
    # All weights 0 switches the experiment off (the rules decide), like no weights: an operator's "stop".
    stopped = load_settings(write(tmp_path, "[routing.experiment]\nweights = { ease = 0.0 }\n"))
    assert assign(stopped.routing.experiment.name, stopped.routing.experiment.weights, "u1") is None


def test_runtime_keys_exist() -> None:
    s = Settings()
    for key in RUNTIME_KEYS:
        node: object = s
        for part in key.split("."):
            assert hasattr(node, part), key
            node = getattr(node, part)


def test_example_file_loads_and_states_the_defaults() -> None:
    """recengine.example.toml documents every section; what it sets must be valid and equal to the defaults."""
    import tomllib

    example = Path(__file__).resolve().parents[1] / "recengine.example.toml"
    loaded = load_settings(example)
    defaults = Settings().model_dump(mode="json")

    def walk(doc: dict[str, object], ref: dict[str, object], where: str) -> None:
        for key, value in doc.items():
            assert key in ref, f"{where}{key} is not a setting"
            if isinstance(value, dict) and isinstance(ref[key], dict) and key != "weights":
                walk(value, ref[key], f"{where}{key}.")  # type: ignore[arg-type]
            else:
                assert value == ref[key], f"{where}{key}: example says {value!r}, default is {ref[key]!r}"

    walk(tomllib.loads(example.read_text()), defaults, "")
    assert loaded.model_dump(mode="json") == defaults


def test_secrets_never_appear_in_a_dump(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            '[serving]\nadmin_api_key = "k3y-do-not-print"\n[cache]\nredis_url = "redis://:hunter2@r:6379/0"\n',
        )
    )
    dumped = settings.model_dump_json()
    assert "k3y-do-not-print" not in dumped and "hunter2" not in dumped
    assert '"redis_url":"redis://:****@r:6379/0"' in dumped
    # The values themselves are intact where the code reads them.
    assert settings.serving.admin_api_key is not None
    assert settings.serving.admin_api_key.get_secret_value() == "k3y-do-not-print"
    assert settings.cache.redis_url == "redis://:hunter2@r:6379/0"


def test_prod_warns_about_a_redis_url_without_password(tmp_path: Path) -> None:
    prod = 'profile = "prod"\n[observability]\nlog_format = "json"\n[cache]\nredis_url = "REDIS"\n'
    bare = load_settings(write(tmp_path, prod.replace("REDIS", "redis://r:6379/0")))
    assert any("no password" in w for w in startup_warnings(bare))
    keyed = prod.replace("REDIS", "redis://:pw@r:6379/0") + '[serving]\nwrite_api_key = "0123456789abcdef"\n'
    assert startup_warnings(load_settings(write(tmp_path, keyed))) == []
    # Development may run a local Redis without one.
    assert startup_warnings(load_settings(write(tmp_path, '[cache]\nredis_url = "redis://r:6379/0"\n'))) == []


def test_a_redis_event_stream_without_a_cap_is_warned_about(tmp_path: Path) -> None:
    redis = '[cache]\nredis_url = "redis://r:6379/0"\n[serving]\nevents_backend = "redis"\n'
    assert startup_warnings(load_settings(write(tmp_path, redis))) == []
    uncapped = load_settings(write(tmp_path, redis + "max_unmerged_events = 0\n"))
    assert any("max_unmerged_events = 0" in w for w in startup_warnings(uncapped))


def test_prod_warns_about_open_writes_and_refuses_a_short_write_key(tmp_path: Path) -> None:
    prod = 'profile = "prod"\n[observability]\nlog_format = "json"\n'
    assert any("write_api_key is not set" in w for w in startup_warnings(load_settings(write(tmp_path, prod))))
    with pytest.raises(ConfigError, match="write_api_key must be at least 16 characters"):
        load_settings(write(tmp_path, prod + '[serving]\nwrite_api_key = "short"\n'))
    dev = load_settings(write(tmp_path, '[serving]\nwrite_api_key = "w-k3y-do-not-print"\n'))
    assert dev.serving.write_api_key is not None and "w-k3y-do-not-print" not in dev.model_dump_json()
