"""Tests for msgsend.config: defaults, discovery, environment overrides and strict validation."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from msgsend import config as config_module
from msgsend.config import (
    DEFAULTS,
    SCHEMA,
    Config,
    RateLimitConfig,
    discover_config_path,
    effective_items,
    env_var_name,
    load_config,
    render_sample_config,
)
from msgsend.errors import ConfigError


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path / "msgsend.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# ---------------------------------------------------------------------- defaults


def test_defaults_are_the_seed_values():
    config = load_config()
    assert config.path is None
    assert config.warnings == ()
    kakao, sms = config.kakaotalk, config.sms
    assert (kakao.name, kakao.base_url, kakao.username, kakao.password) == (
        "kakaotalk",
        "http://localhost:8081",
        "autoever",
        "1234",
    )
    assert (sms.name, sms.base_url, sms.username, sms.password) == (
        "sms",
        "http://localhost:8082",
        "autoever",
        "5678",
    )
    assert kakao.rate_limit == RateLimitConfig(count=100, period=60.0)
    assert sms.rate_limit == RateLimitConfig(count=500, period=60.0)
    assert (kakao.connect_timeout, kakao.read_timeout) == (5.0, 5.0)
    assert (sms.connect_timeout, sms.read_timeout) == (5.0, 5.0)
    retry = config.retry
    assert (retry.max_attempts, retry.backoff_delay, retry.multiplier, retry.max_delay) == (
        3,
        1.0,
        2.0,
        30.0,
    )
    assert config.fallback is True
    assert (config.circuit_breaker.failure_threshold, config.circuit_breaker.reset_timeout) == (
        5,
        30.0,
    )
    assert (config.limiter.strategy, config.limiter.store) == ("sliding-window", "sqlite")
    assert config.limiter.path is None
    assert config.limiter.redis_url is None
    assert config.bulk.concurrency == 8
    assert config.alerts.webhook_url is None
    assert set(config.sources.values()) == {"default"}


def test_every_default_has_a_schema_entry():
    assert set(DEFAULTS) <= set(SCHEMA)


def test_provider_lookup():
    config = load_config()
    assert config.provider("kakaotalk") is config.kakaotalk
    assert config.provider("sms") is config.sms
    with pytest.raises(ConfigError, match="unknown provider 'fax'"):
        config.provider("fax")


def test_repr_masks_passwords(monkeypatch):
    monkeypatch.setenv("MSGSEND_KAKAOTALK_AUTH_PASSWORD", "hunter2-secret")
    config = load_config()
    assert "hunter2-secret" not in repr(config)
    assert "hunter2-secret" not in repr(config.kakaotalk)
    assert "****" in repr(config.kakaotalk)


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(AttributeError):
        config.fallback = False  # type: ignore[misc]


# ---------------------------------------------------------------------- discovery


@pytest.fixture
def four_files(tmp_path, monkeypatch) -> dict[str, Path]:
    """One config file in each place of SPEC §5, each with its own kakaotalk base-url."""
    xdg = Path(os.environ["XDG_CONFIG_HOME"])
    files = {
        "explicit": write(
            tmp_path / "explicit.toml", '[kakaotalk]\nbase-url = "http://explicit"\n'
        ),
        "env": write(tmp_path / "env.toml", '[kakaotalk]\nbase-url = "http://env"\n'),
        "cwd": write(Path.cwd() / "msgsend.toml", '[kakaotalk]\nbase-url = "http://cwd"\n'),
        "xdg": write(xdg / "msgsend" / "config.toml", '[kakaotalk]\nbase-url = "http://xdg"\n'),
    }
    monkeypatch.setenv("MSGSEND_CONFIG", str(files["env"]))
    return files


def test_discovery_explicit_path_first(four_files):
    config = load_config(four_files["explicit"])
    assert config.path == four_files["explicit"]
    assert config.kakaotalk.base_url == "http://explicit"


def test_discovery_env_second(four_files):
    config = load_config()
    assert config.path == four_files["env"]
    assert config.kakaotalk.base_url == "http://env"


def test_discovery_cwd_third(four_files, monkeypatch):
    monkeypatch.delenv("MSGSEND_CONFIG")
    config = load_config()
    assert config.path == four_files["cwd"]
    assert config.kakaotalk.base_url == "http://cwd"


def test_discovery_xdg_fourth(four_files, monkeypatch):
    monkeypatch.delenv("MSGSEND_CONFIG")
    four_files["cwd"].unlink()
    config = load_config()
    assert config.path == four_files["xdg"]
    assert config.kakaotalk.base_url == "http://xdg"


def test_discovery_defaults_last(four_files, monkeypatch):
    monkeypatch.delenv("MSGSEND_CONFIG")
    four_files["cwd"].unlink()
    four_files["xdg"].unlink()
    config = load_config()
    assert config.path is None
    assert config.kakaotalk.base_url == "http://localhost:8081"


def test_discovery_home_config_without_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write(tmp_path / ".config" / "msgsend" / "config.toml", "[bulk]\nconcurrency = 3\n")
    assert discover_config_path() == path
    assert load_config().bulk.concurrency == 3


def test_discovery_with_explicit_env_and_cwd(tmp_path):
    local = write(tmp_path / "msgsend.toml", "")
    assert discover_config_path(env={}, cwd=tmp_path) == local
    assert discover_config_path(env={}, cwd=tmp_path / "elsewhere") is None


def test_empty_msgsend_config_is_ignored(monkeypatch):
    monkeypatch.setenv("MSGSEND_CONFIG", "")
    assert load_config().path is None


def test_missing_explicit_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    assert "no such configuration file" in str(info.value)


def test_missing_file_named_by_env(tmp_path, monkeypatch):
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("MSGSEND_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="MSGSEND_CONFIG") as info:
        load_config()
    assert str(missing) in str(info.value)


def test_explicit_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path)


# ---------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("kakaotalk.auth.password", "MSGSEND_KAKAOTALK_AUTH_PASSWORD"),
        ("sms.rate-limit.requests-per-second", "MSGSEND_SMS_RATE_LIMIT_REQUESTS_PER_SECOND"),
        ("circuit-breaker.reset-timeout", "MSGSEND_CIRCUIT_BREAKER_RESET_TIMEOUT"),
        ("limiter.redis-url", "MSGSEND_LIMITER_REDIS_URL"),
    ],
)
def test_env_var_name(key, name):
    assert env_var_name(key) == name


def test_env_overrides_file(tmp_path, monkeypatch):
    path = write(
        tmp_path / "c.toml",
        '[kakaotalk.auth]\npassword = "from-file"\n[retry]\nmax-attempts = 4\n',
    )
    monkeypatch.setenv("MSGSEND_KAKAOTALK_AUTH_PASSWORD", "from-env")
    monkeypatch.setenv("MSGSEND_SMS_BASE_URL", "https://sms.example.com/api/")
    monkeypatch.setenv("MSGSEND_SMS_TIMEOUT", "2.5")
    monkeypatch.setenv("MSGSEND_FALLBACK_ENABLED", "off")
    monkeypatch.setenv("MSGSEND_RETRY_BACKOFF_DELAY", "250")
    config = load_config(path)
    assert config.kakaotalk.password == "from-env"
    assert config.retry.max_attempts == 4  # the file still counts for other keys
    assert config.retry.backoff_delay == 0.25
    assert config.sms.base_url == "https://sms.example.com/api"
    assert (config.sms.connect_timeout, config.sms.read_timeout) == (2.5, 2.5)
    assert config.fallback is False
    assert config.sources["kakaotalk.auth.password"] == "MSGSEND_KAKAOTALK_AUTH_PASSWORD"
    assert config.sources["retry.max-attempts"] == f"file {path}"
    assert config.sources["sms.auth.password"] == "default"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("ON", True),
     ("0", False), ("false", False), ("no", False), ("off", False)],
)  # fmt: skip
def test_env_bool_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("MSGSEND_FALLBACK_ENABLED", raw)
    assert load_config().fallback is expected


def test_overrides_beat_env(monkeypatch):
    monkeypatch.setenv("MSGSEND_FALLBACK_ENABLED", "1")
    monkeypatch.setenv("MSGSEND_BULK_CONCURRENCY", "4")
    config = load_config(overrides={"fallback.enabled": False, "bulk.concurrency": 16})
    assert config.fallback is False
    assert config.bulk.concurrency == 16
    assert config.sources["bulk.concurrency"] == "command line"


def test_env_per_second_replaces_file_per_minute(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", "[kakaotalk.rate-limit]\nrequests-per-minute = 200\n")
    monkeypatch.setenv("MSGSEND_KAKAOTALK_RATE_LIMIT_REQUESTS_PER_SECOND", "5")
    config = load_config(path)
    assert config.kakaotalk.rate_limit == RateLimitConfig(count=5, period=1.0)
    assert "kakaotalk.rate-limit.requests-per-minute" not in config.values
    assert config.sms.rate_limit == RateLimitConfig(count=500, period=60.0)


def test_file_per_second_replaces_default_per_minute(tmp_path):
    path = write(tmp_path / "c.toml", "[sms.rate-limit]\nrequests-per-second = 2\n")
    config = load_config(path)
    assert config.sms.rate_limit == RateLimitConfig(count=2, period=1.0)
    assert config.sms.rate_limit.per_second == 2.0
    assert config.kakaotalk.rate_limit == RateLimitConfig(count=100, period=60.0)


def test_fractional_per_second_is_kept_exact(tmp_path):
    path = write(tmp_path / "c.toml", "[sms.rate-limit]\nrequests-per-second = 0.5\n")
    assert load_config(path).sms.rate_limit == RateLimitConfig(count=30, period=60.0)


def test_env_per_minute_replaces_file_per_second(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", "[sms.rate-limit]\nrequests-per-second = 2\n")
    monkeypatch.setenv("MSGSEND_SMS_RATE_LIMIT_REQUESTS_PER_MINUTE", "60")
    assert load_config(path).sms.rate_limit == RateLimitConfig(count=60, period=60.0)


def test_both_rates_in_one_file(tmp_path):
    path = write(
        tmp_path / "c.toml",
        "[kakaotalk.rate-limit]\nrequests-per-minute = 100\nrequests-per-second = 2\n",
    )
    with pytest.raises(ConfigError, match="not both") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.key == "kakaotalk.rate-limit"


def test_both_rates_in_the_environment(monkeypatch):
    monkeypatch.setenv("MSGSEND_SMS_RATE_LIMIT_REQUESTS_PER_MINUTE", "100")
    monkeypatch.setenv("MSGSEND_SMS_RATE_LIMIT_REQUESTS_PER_SECOND", "2")
    with pytest.raises(ConfigError, match="not both") as info:
        load_config()
    assert "MSGSEND_SMS_RATE_LIMIT_REQUESTS_PER_SECOND" in str(info.value)


def test_separate_timeouts(tmp_path):
    path = write(tmp_path / "c.toml", "[sms]\ntimeout = 4\nconnect-timeout = 1.5\n")
    config = load_config(path)
    assert (config.sms.connect_timeout, config.sms.read_timeout) == (1.5, 4.0)


def test_limiter_settings(tmp_path):
    path = write(
        tmp_path / "c.toml",
        '[limiter]\nstrategy = "token-bucket"\nstore = "redis"\n'
        'redis-url = "redis://cache:6379/2"\npath = "~/rl.sqlite"\n',
    )
    limiter = load_config(path).limiter
    assert (limiter.strategy, limiter.store, limiter.redis_url) == (
        "token-bucket",
        "redis",
        "redis://cache:6379/2",
    )
    assert limiter.path == Path("~/rl.sqlite").expanduser()


def test_redis_store_needs_a_url(tmp_path):
    path = write(tmp_path / "c.toml", '[limiter]\nstore = "redis"\n')
    with pytest.raises(ConfigError, match="redis-url") as info:
        load_config(path)
    assert info.value.key == "limiter.redis-url"
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------- errors

# TOML text, dotted key, words of the expectation
ERROR_TABLE = [
    # unknown key, with a did-you-mean
    ('[kakaotalk]\nbase_url = "http://x"\n', "kakaotalk.base_url",
     "did you mean 'kakaotalk.base-url'"),
    ("[retry]\nmax_attempts = 3\n", "retry.max_attempts", "did you mean 'retry.max-attempts'"),
    ("[retry]\nbogus = 3\n", "retry.bogus", "unknown key"),
    # unknown table
    ('[kakao]\nbase-url = "http://x"\n', "kakao", "unknown"),
    ("[kakaotalk.oauth]\ntoken = 1\n", "kakaotalk.oauth", "unknown"),
    # a table given as a value and a value given as a table
    ('kakaotalk = "http://x"\n', "kakaotalk", "a table"),
    ("[kakaotalk.timeout]\nconnect = 1\n", "kakaotalk.timeout", "a number, got a table"),
    # wrong type
    ('[kakaotalk]\ntimeout = "fast"\n', "kakaotalk.timeout", "expected a number, got 'fast'"),
    ("[retry]\nmax-attempts = 2.5\n", "retry.max-attempts", "expected a whole number, got 2.5"),
    ("[retry]\nmax-attempts = true\n", "retry.max-attempts", "expected a whole number"),
    ("[sms.auth]\npassword = 5678\n", "sms.auth.password", "expected a string, got 5678"),
    ("[kakaotalk]\ntimeout = inf\n", "kakaotalk.timeout", "expected a number"),
    ("[kakaotalk]\ntimeout = nan\n", "kakaotalk.timeout", "expected a number"),
    # bool given as a string
    ('[fallback]\nenabled = "true"\n', "fallback.enabled", "expected true or false, got 'true'"),
    ("[fallback]\nenabled = 1\n", "fallback.enabled", "expected true or false, got 1"),
    # bad URL / bad port
    ('[kakaotalk]\nbase-url = "localhost:8081"\n', "kakaotalk.base-url",
     "a URL starting with http:// or https://"),
    ('[sms]\nbase-url = "ftp://sms.example.com"\n', "sms.base-url", "http:// or https://"),
    ('[sms]\nbase-url = "http://"\n', "sms.base-url", "a URL"),
    ('[sms]\nbase-url = "http://localhost:99999"\n', "sms.base-url", "bad port"),
    ('[sms]\nbase-url = "http://localhost:port"\n', "sms.base-url", "bad port"),
    ('[limiter]\nredis-url = "http://cache:6379"\n', "limiter.redis-url", "redis://"),
    ('[alerts]\nwebhook-url = "hooks.example.com"\n', "alerts.webhook-url", "a URL"),
    # a choice outside the list
    ('[limiter]\nstrategy = "leaky-bucket"\n', "limiter.strategy", "one of 'sliding-window'"),
    ('[limiter]\nstore = "postgres"\n', "limiter.store", "'memory', 'sqlite', 'redis'"),
    # zero / negative numbers
    ("[kakaotalk]\ntimeout = 0\n", "kakaotalk.timeout", "greater than 0, got 0"),
    ("[sms]\ntimeout = -1.5\n", "sms.timeout", "greater than 0"),
    ("[retry]\nmax-attempts = 0\n", "retry.max-attempts", "1 or more, got 0"),
    ("[retry]\nbackoff-delay = -1\n", "retry.backoff-delay", "0 or more"),
    ("[retry]\nmultiplier = 0.5\n", "retry.multiplier", "1 or more"),
    ("[retry]\nmax-delay = -5\n", "retry.max-delay", "0 or more"),
    ("[kakaotalk.rate-limit]\nrequests-per-minute = 0\n",
     "kakaotalk.rate-limit.requests-per-minute", "greater than 0"),
    ("[sms.rate-limit]\nrequests-per-second = -2\n",
     "sms.rate-limit.requests-per-second", "greater than 0"),
    ("[circuit-breaker]\nfailure-threshold = 0\n", "circuit-breaker.failure-threshold",
     "1 or more"),
    ("[circuit-breaker]\nreset-timeout = 0\n", "circuit-breaker.reset-timeout", "greater than 0"),
    ("[bulk]\nconcurrency = 0\n", "bulk.concurrency", "from 1 to 256"),
    ("[bulk]\nconcurrency = 1000\n", "bulk.concurrency", "from 1 to 256"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "key", "words"),
    ERROR_TABLE,
    ids=[row[1] + f"-{i}" for i, row in enumerate(ERROR_TABLE)],
)
def test_config_errors_name_file_key_and_expectation(tmp_path, text, key, words):
    error = config_error(tmp_path, text)
    path = str(tmp_path / "msgsend.toml")
    assert error.source == path
    assert error.key == key
    message = str(error)
    assert message.startswith(f"{path}: {key}: ")
    assert words in message


def test_bad_toml_syntax(tmp_path):
    error = config_error(tmp_path, "[kakaotalk\nbase-url = 1\n")
    assert str(tmp_path / "msgsend.toml") in str(error)
    assert "not valid TOML" in str(error)
    assert "line 1" in str(error)


def test_duplicate_key_is_bad_toml(tmp_path):
    error = config_error(tmp_path, "[retry]\nmax-attempts = 3\nmax-attempts = 4\n")
    assert "not valid TOML" in str(error)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "msgsend.toml"
    path.write_bytes("# 메시지 설정\n[bulk]\nconcurrency = 2\n".encode("euc-kr"))
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_utf8_file_with_korean_comments(tmp_path):
    path = write(tmp_path / "c.toml", "# 메시지 설정\n[bulk]\nconcurrency = 2  # 동시 발송\n")
    assert load_config(path).bulk.concurrency == 2


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", "")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError, match="cannot read the file") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_passwords_keep_their_spaces(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", '[sms.auth]\npassword = " pass word "\n')
    monkeypatch.setenv("MSGSEND_KAKAOTALK_AUTH_PASSWORD", "secret ")
    config = load_config(path)
    assert config.sms.password == " pass word "
    assert config.kakaotalk.password == "secret "


def test_urls_and_choices_are_stripped(monkeypatch):
    monkeypatch.setenv("MSGSEND_SMS_BASE_URL", " http://sms.local:9000 ")
    monkeypatch.setenv("MSGSEND_LIMITER_STORE", "memory\n")
    config = load_config()
    assert config.sms.base_url == "http://sms.local:9000"
    assert config.limiter.store == "memory"


# environment variable, value, words
ENV_ERROR_TABLE = [
    ("MSGSEND_RETRY_MAX_ATTEMPTS", "three", "expected a whole number, got 'three'"),
    ("MSGSEND_RETRY_MAX_ATTEMPTS", "0", "1 or more"),
    ("MSGSEND_SMS_TIMEOUT", "soon", "expected a number"),
    ("MSGSEND_FALLBACK_ENABLED", "maybe", "expected true or false"),
    ("MSGSEND_KAKAOTALK_BASE_URL", "localhost", "a URL"),
    ("MSGSEND_LIMITER_STORE", "disk", "one of"),
]


@pytest.mark.parametrize(("name", "value", "words"), ENV_ERROR_TABLE)
def test_env_errors_name_the_variable(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert f"environment {name}" in str(info.value)
    assert words in str(info.value)


def test_unknown_msgsend_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("MSGSEND_RAISE_ERRORS", "1")
    assert load_config().fallback is True


# ---------------------------------------------------------------------- permissions


@pytest.mark.parametrize(("mode", "warns"), [(0o600, False), (0o400, False), (0o640, True),
                                             (0o644, True), (0o604, True)])  # fmt: skip
def test_permission_warning_for_a_password(tmp_path, mode, warns):
    path = write(tmp_path / "c.toml", '[sms.auth]\npassword = "s3cret"\n', mode=mode)
    config = load_config(path)
    if warns:
        (warning,) = config.warnings
        assert str(path) in warning
        assert f"chmod 600 {path}" in warning
        assert "s3cret" not in warning
    else:
        assert config.warnings == ()


def test_no_permission_warning_without_a_password(tmp_path):
    path = write(tmp_path / "c.toml", "[bulk]\nconcurrency = 2\n", mode=0o644)
    assert load_config(path).warnings == ()


# ---------------------------------------------------------------------- sample and show


def test_sample_config_parses_and_loads_back_to_the_defaults(tmp_path):
    text = render_sample_config()
    data = tomllib.loads(text)
    assert data["kakaotalk"]["auth"] == {"username": "autoever", "password": "1234"}
    assert data["sms"]["rate-limit"] == {"requests-per-minute": 500}
    path = write(tmp_path / "sample.toml", text)
    loaded = load_config(path)
    defaults = load_config(env={}, cwd=tmp_path / "empty")
    assert dict(loaded.values) == dict(defaults.values)
    for name in ("kakaotalk", "sms", "retry", "fallback", "circuit_breaker", "limiter", "bulk",
                 "alerts"):  # fmt: skip
        assert getattr(loaded, name) == getattr(defaults, name), name


def test_sample_config_documents_every_key():
    text = render_sample_config()
    for key in SCHEMA:
        assert key.rsplit(".", 1)[1] in text, key
    assert "MSGSEND_KAKAOTALK_AUTH_PASSWORD" in text
    assert "chmod 600" in text


def test_effective_items_mask_passwords_and_give_sources(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", '[kakaotalk.auth]\npassword = "file-secret"\n')
    monkeypatch.setenv("MSGSEND_SMS_AUTH_PASSWORD", "env-secret")
    items = {key: (value, source) for key, value, source in effective_items(load_config(path))}
    assert items["kakaotalk.auth.password"] == ("****", f"file {path}")
    assert items["sms.auth.password"] == ("****", "MSGSEND_SMS_AUTH_PASSWORD")
    assert items["kakaotalk.base-url"] == ("http://localhost:8081", "default")
    assert items["retry.max-attempts"] == (3, "default")
    rendered = repr(items)
    assert "file-secret" not in rendered
    assert "env-secret" not in rendered


def test_effective_items_follow_schema_order():
    keys = [key for key, _value, _source in effective_items(load_config())]
    assert keys == [key for key in SCHEMA if key in keys]
    assert set(keys) == set(DEFAULTS)


def test_sandbox_config_fixture_shape(tmp_path):
    """The shared sandbox_config fixture's file is valid for this loader."""
    path = write(
        tmp_path / "c.toml",
        '[kakaotalk]\nbase-url = "http://127.0.0.1:5000"\ntimeout = 2.0\n'
        "[retry]\nbackoff-delay = 10\nmax-delay = 50\n"
        '[limiter]\nstore = "memory"\n[circuit-breaker]\nreset-timeout = 1\n',
    )
    config = load_config(path)
    assert config.retry.backoff_delay == 0.01
    assert config.retry.max_delay == 0.05
    assert config.circuit_breaker.reset_timeout == 1.0
    assert config.limiter.store == "memory"


def test_module_exports():
    for name in config_module.__all__:
        assert hasattr(config_module, name)
    assert isinstance(load_config(), Config)
