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
    assert "password='***'" in repr(config.kakaotalk)


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
    with pytest.raises(ConfigError, match="is a directory, not a configuration file"):
        load_config(tmp_path)


def test_dev_null_is_the_defaults_alone() -> None:
    config = load_config("/dev/null")
    assert config.path == Path("/dev/null")
    assert config.sources["retry.max-attempts"] == "default"


def test_a_pipe_is_read_once(tmp_path):
    # --config <(vault read ...): the shell hands msgsend a pipe, not a regular file.
    read, write = os.pipe()
    os.write(write, b"[retry]\nmax-attempts = 2\n")
    os.close(write)
    try:
        config = load_config(f"/dev/fd/{read}")
    finally:
        os.close(read)
    assert config.retry.max_attempts == 2


def test_a_file_over_1_mib_is_refused_after_a_bounded_read(tmp_path):
    # The bound that keeps --config /dev/zero (or a pipe that never ends) from filling memory:
    # only the first MiB and one byte are read, and that is too much for a configuration.
    big = tmp_path / "big.toml"
    big.write_text("# " + "a" * (1 << 20) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="larger than 1 MiB: not a configuration file"):
        load_config(big)


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


@pytest.mark.parametrize("rate", ["2.5", "0.5"])
def test_fractional_per_second_is_refused_pointing_at_per_minute(tmp_path, rate):
    path = write(tmp_path / "c.toml", f"[sms.rate-limit]\nrequests-per-second = {rate}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "sms.rate-limit.requests-per-second"
    assert f"expected a whole number, got {rate}" in str(info.value)
    assert "requests-per-minute" in str(info.value)


@pytest.mark.parametrize(("written", "count"), [("1e3", 1000), ("20.0", 20), ("1_000", 1000)])
def test_a_whole_number_written_as_a_float_is_that_number(tmp_path, written, count):
    path = write(tmp_path / "c.toml", f"[sms.rate-limit]\nrequests-per-second = {written}\n")
    assert load_config(path).sms.rate_limit == RateLimitConfig(count=count, period=1.0)


def test_a_whole_float_out_of_bounds_is_told_the_bounds(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", "[sms.rate-limit]\nrequests-per-second = 1e7\n")
    with pytest.raises(ConfigError, match="expected a whole number from 1 to 1000000"):
        load_config(path)
    monkeypatch.setenv("MSGSEND_RETRY_MAX_ATTEMPTS", "4.0")
    assert load_config().retry.max_attempts == 4


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
    ("[kakaotalk.timeout]\nconnect = 1\n", "kakaotalk.timeout", "a number greater than 0"),
    # wrong type
    ('[kakaotalk]\ntimeout = "fast"\n', "kakaotalk.timeout", "expected a number, got 'fast'"),
    ("[retry]\nmax-attempts = 2.5\n", "retry.max-attempts", "expected a whole number, got 2.5"),
    ("[retry]\nmax-attempts = true\n", "retry.max-attempts", "expected a whole number, got true"),
    # values shown as TOML writes them, not as Python prints them
    ("[kakaotalk.rate-limit]\nrequests-per-second = false\n",
     "kakaotalk.rate-limit.requests-per-second", "got false;"),
    ("[sms.request]\nfields = {to = 5, on = true}\n", "sms.request.fields",
     "got {to = 5, on = true}"),
    ("[sms]\nthrottle-statuses = [429, true]\n", "sms.throttle-statuses", "got [429, true]"),
    ("[sms.auth]\npassword = 5678\n", "sms.auth.password",
     "expected a string, got a number (hidden)"),
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
    # an unbalanced IPv6 bracket (urlsplit raises ValueError): 78, the password unshown
    ('[sms]\nbase-url = "http://u:pw@[::1"\n', "sms.base-url", "'http://u:***@[::1'"),
    ('[limiter]\nredis-url = "redis://u:pw@[::1"\n', "limiter.redis-url", "'redis://u:***@"),
    ('[limiter]\nredis-url = "http://cache:6379"\n', "limiter.redis-url", "redis://"),
    ('[alerts]\nwebhook-url = "hooks.example.com"\n', "alerts.webhook-url", "a URL"),
    # a choice outside the list
    ('[limiter]\nstrategy = "leaky-bucket"\n', "limiter.strategy", "one of 'sliding-window'"),
    ('[limiter]\nstore = "postgres"\n', "limiter.store", "'memory', 'sqlite', 'redis'"),
    # zero / negative numbers
    ("[kakaotalk]\ntimeout = 0\n", "kakaotalk.timeout", "greater than 0 and at most 300"),
    ("[sms]\ntimeout = -1.5\n", "sms.timeout", "greater than 0"),
    ("[retry]\nmax-attempts = 0\n", "retry.max-attempts", "from 1 to 100, got 0"),
    ("[retry]\nbackoff-delay = -1\n", "retry.backoff-delay", "from 0 to 3600000"),
    ("[retry]\nmultiplier = 0.5\n", "retry.multiplier", "from 1 to 10"),
    ("[retry]\nmax-delay = -5\n", "retry.max-delay", "from 0 to 3600000"),
    ("[kakaotalk.rate-limit]\nrequests-per-minute = 0\n",
     "kakaotalk.rate-limit.requests-per-minute", "from 1 to 60000000"),
    ("[sms.rate-limit]\nrequests-per-second = -2\n",
     "sms.rate-limit.requests-per-second", "from 1 to 1000000"),
    ("[circuit-breaker]\nfailure-threshold = 0\n", "circuit-breaker.failure-threshold",
     "from 1 to 10000"),
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

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # as root, a mode of 000 would not refuse
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
    ("MSGSEND_RETRY_MAX_ATTEMPTS", "0", "from 1 to 100"),
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


@pytest.mark.parametrize("name", ["MSGSEND_RAISE_ERRORS", "MSGSEND_CONFIG"])
def test_reserved_msgsend_variables_stay_valid(monkeypatch, name):
    monkeypatch.setenv(name, "")
    assert load_config().fallback is True


# misspelt variable, the did-you-mean it gets (None: no close match)
UNKNOWN_ENV_TABLE = [
    ("MSGSEND_KAKAOTALK_BASEURL", "MSGSEND_KAKAOTALK_BASE_URL"),
    ("MSGSEND_SMS_AUTH_PASWORD", "MSGSEND_SMS_AUTH_PASSWORD"),
    ("MSGSEND_RETRY_MAXATTEMPTS", "MSGSEND_RETRY_MAX_ATTEMPTS"),
    ("MSGSEND_RAISE_ERROR", "MSGSEND_RAISE_ERRORS"),
    ("MSGSEND_CONFG", "MSGSEND_CONFIG"),
    ("MSGSEND_kakaotalk_timeout", "MSGSEND_KAKAOTALK_TIMEOUT"),  # names are case-sensitive
    ("MSGSEND_WHATEVER", None),
    ("MSGSEND_", None),
]


@pytest.mark.parametrize(("name", "close"), UNKNOWN_ENV_TABLE)
def test_unknown_msgsend_variables_are_refused_with_a_did_you_mean(monkeypatch, name, close):
    monkeypatch.setenv(name, "x")
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert message.startswith(f"environment {name}: unknown variable")
    if close:
        assert f"unknown variable; did you mean {close}? (each key's" in message
    else:
        assert "did you mean" not in message
        assert "unknown variable (each key's" in message


def test_every_key_has_a_valid_variable_and_no_two_share_one():
    names = [env_var_name(key) for key in SCHEMA]
    assert len(set(names)) == len(names)
    assert not set(names) & set(config_module.RESERVED_ENV_VARS)


# ---------------------------------------------------------------------- lists, tables, bounds


def test_new_keys_have_their_defaults():
    config = load_config()
    assert config.bulk.max_outage == 300.0
    assert config.bulk.quiet_hours is None
    assert config.bulk.timezone == "Asia/Seoul"
    assert config.retry.max_retry_after == 60.0
    assert config.overflow is False
    assert config.kakaotalk.throttle_statuses == (429,)
    assert config.sms.throttle_statuses == (429,)
    assert config.alerts.apprise_urls == ()
    breaker = config.circuit_breaker
    assert (breaker.window_size, breaker.minimum_calls) == (20, 10)
    assert (breaker.failure_rate_threshold, breaker.reset_timeout) == (0.5, 30.0)


def test_lists_from_the_file(tmp_path):
    path = write(
        tmp_path / "c.toml",
        "[sms]\nthrottle-statuses = [429, 503]\n"
        '[alerts]\napprise-urls = ["tgram://bot/chat", "mailto://u:p@mail.example.com"]\n'
        '[bulk]\nquiet-hours = "21:00-08:00"\ntimezone = "UTC"\nmax-outage = 0.5\n'
        "[fallback]\noverflow = true\n[retry]\nmax-retry-after = 0\n",
    )
    config = load_config(path)
    assert config.sms.throttle_statuses == (429, 503)
    assert config.kakaotalk.throttle_statuses == (429,)
    assert config.alerts.apprise_urls == ("tgram://bot/chat", "mailto://u:p@mail.example.com")
    assert (config.bulk.quiet_hours, config.bulk.timezone) == ("21:00-08:00", "UTC")
    assert config.bulk.max_outage == 0.5
    assert config.overflow is True
    assert config.retry.max_retry_after == 0.0


def test_lists_from_the_environment_are_json(monkeypatch):
    monkeypatch.setenv("MSGSEND_KAKAOTALK_THROTTLE_STATUSES", "[429, 503]")
    monkeypatch.setenv("MSGSEND_ALERTS_APPRISE_URLS", '["json://alerts.example.com/hook"]')
    config = load_config()
    assert config.kakaotalk.throttle_statuses == (429, 503)
    assert config.alerts.apprise_urls == ("json://alerts.example.com/hook",)
    assert config.sources["kakaotalk.throttle-statuses"] == "MSGSEND_KAKAOTALK_THROTTLE_STATUSES"


@pytest.mark.parametrize(
    ("name", "value", "example"),
    [
        ("MSGSEND_KAKAOTALK_THROTTLE_STATUSES", "429,503", "'[429, 503]'"),
        ("MSGSEND_ALERTS_APPRISE_URLS", "tgram://b0ttoken/1", """'["a", "b"]'"""),
        ("MSGSEND_SMS_REQUEST_QUERY", "phone={recipient}", """'{"name": "value"}'"""),
    ],
)
def test_a_list_or_table_not_in_json_is_refused_with_an_example_of_its_kind(
    monkeypatch, name, value, example
):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert f"in the environment: {example})" in str(info.value)
    assert "b0ttoken" not in str(info.value)


def test_a_table_of_strings_loads_and_overrides_from_json(tmp_path, monkeypatch):
    """Tables of strings are config values (formats' [PROVIDER.request] fields use them)."""
    path = write(
        tmp_path / "c.toml", '[sms.request]\nfields = {to = "{recipient}", text = "{message}"}\n'
    )
    config = load_config(path)
    assert config.values["sms.request.fields"] == {"to": "{recipient}", "text": "{message}"}
    monkeypatch.setenv(
        "MSGSEND_SMS_REQUEST_FIELDS", '{"phone": "{recipient}", "text": "{message}"}'
    )
    config = load_config(path)
    assert config.values["sms.request.fields"] == {"phone": "{recipient}", "text": "{message}"}
    assert config.sources["sms.request.fields"] == "MSGSEND_SMS_REQUEST_FIELDS"
    error = config_error(tmp_path, "[sms.request]\nfields = {to = 1}\n")
    assert error.key == "sms.request.fields"
    assert "a table of strings" in str(error)
    monkeypatch.setenv("MSGSEND_SMS_REQUEST_FIELDS", "phone=recipient")
    with pytest.raises(ConfigError, match="expected JSON") as info:
        load_config(path)
    assert "environment MSGSEND_SMS_REQUEST_FIELDS" in str(info.value)
    monkeypatch.setenv("MSGSEND_SMS_REQUEST_FIELDS", '["phone"]')
    with pytest.raises(ConfigError, match="a table of strings"):
        load_config(path)


# the bounds of SPEC §10 / issue 11: TOML text, key, words naming the bound
BOUNDS_TABLE = [
    ("[retry]\nmultiplier = 1e308\n", "retry.multiplier", "from 1 to 10, got 1e+308"),
    ("[retry]\nmultiplier = 10.5\n", "retry.multiplier", "from 1 to 10"),
    ("[kakaotalk]\ntimeout = 1e308\n", "kakaotalk.timeout", "at most 300 (seconds), got 1e+308"),
    ("[sms]\nconnect-timeout = 301\n", "sms.connect-timeout", "at most 300 (seconds)"),
    ("[sms]\nread-timeout = 0\n", "sms.read-timeout", "greater than 0"),
    ("[retry]\nbackoff-delay = 3600001\n", "retry.backoff-delay", "3600000 (milliseconds)"),
    ("[retry]\nmax-delay = 1e12\n", "retry.max-delay", "3600000 (milliseconds)"),
    ("[retry]\nmax-attempts = 101\n", "retry.max-attempts", "from 1 to 100"),
    ("[retry]\nmax-retry-after = 3601\n", "retry.max-retry-after", "from 0 to 3600 (seconds)"),
    ("[retry]\nmax-retry-after = -1\n", "retry.max-retry-after", "from 0 to 3600"),
    ("[sms.rate-limit]\nrequests-per-second = 1000001\n", "sms.rate-limit.requests-per-second",
     "from 1 to 1000000"),
    ("[sms.rate-limit]\nrequests-per-minute = 60000001\n", "sms.rate-limit.requests-per-minute",
     "from 1 to 60000000"),
    ("[circuit-breaker]\nreset-timeout = 86400\n", "circuit-breaker.reset-timeout",
     "at most 3600"),
    ("[circuit-breaker]\nfailure-rate-threshold = 0\n", "circuit-breaker.failure-rate-threshold",
     "greater than 0 and at most 1"),
    ("[circuit-breaker]\nfailure-rate-threshold = 1.5\n",
     "circuit-breaker.failure-rate-threshold", "at most 1"),
    ("[circuit-breaker]\nwindow-size = 0\n", "circuit-breaker.window-size", "from 1 to 10000"),
    ("[circuit-breaker]\nminimum-calls = 30\n", "circuit-breaker.minimum-calls",
     "at most window-size (20), got 30"),
    ("[bulk]\nmax-outage = 0\n", "bulk.max-outage", "greater than 0 and at most 86400"),
    ("[bulk]\nmax-outage = 1e9\n", "bulk.max-outage", "at most 86400 (seconds)"),
    ('[bulk]\nquiet-hours = "9pm-8am"\n', "bulk.quiet-hours", "HH:MM-HH:MM"),
    ('[bulk]\nquiet-hours = "24:00-08:00"\n', "bulk.quiet-hours", "HH:MM-HH:MM"),
    ('[bulk]\nquiet-hours = "08:00-08:00"\n', "bulk.quiet-hours", "must differ"),
    ('[bulk]\ntimezone = "Mars/Olympus"\n', "bulk.timezone", "IANA time zone"),
    ('[bulk]\ntimezone = "../../etc/passwd"\n', "bulk.timezone", "IANA time zone"),
    ("[sms]\nthrottle-statuses = 429\n", "sms.throttle-statuses", "a list of whole numbers"),
    ("[sms]\nthrottle-statuses = []\n", "sms.throttle-statuses", "at least 1 item"),
    ("[sms]\nthrottle-statuses = [200]\n", "sms.throttle-statuses",
     "each item to be a whole number from 400 to 599 (HTTP status), got 200"),
    ('[sms]\nthrottle-statuses = ["429"]\n', "sms.throttle-statuses", "a list of whole numbers"),
    ("[sms]\nthrottle-statuses = [true]\n", "sms.throttle-statuses", "a list of whole numbers"),
    ('[alerts]\napprise-urls = "tgram://x/y"\n', "alerts.apprise-urls", "a list of strings"),
    ('[alerts]\napprise-urls = ["not a url"]\n', "alerts.apprise-urls", "an Apprise URL"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "words"), BOUNDS_TABLE)
def test_numbers_outside_their_bounds_are_refused_naming_the_bound(tmp_path, text, key, words):
    error = config_error(tmp_path, text)
    assert error.key == key
    assert str(tmp_path / "msgsend.toml") in str(error)
    assert words in str(error)


# environment variable, value, words
ENV_BOUNDS_TABLE = [
    ("MSGSEND_RETRY_MULTIPLIER", "1e308", "from 1 to 10, got '1e308'"),
    ("MSGSEND_SMS_TIMEOUT", "inf", "expected a number"),
    ("MSGSEND_KAKAOTALK_THROTTLE_STATUSES", "429", "a list of whole numbers"),
    ("MSGSEND_KAKAOTALK_THROTTLE_STATUSES", "[429,", "expected JSON"),
    (
        "MSGSEND_KAKAOTALK_THROTTLE_STATUSES",
        "[1e3]",
        "each item to be a whole number from 400 to 599",
    ),
    ("MSGSEND_ALERTS_APPRISE_URLS", "tgram://x/y", "expected JSON"),
    ("MSGSEND_BULK_QUIET_HOURS", "21-8", "HH:MM-HH:MM"),
]


@pytest.mark.parametrize(("name", "value", "words"), ENV_BOUNDS_TABLE)
def test_env_values_outside_their_bounds_are_refused(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(info.value).startswith(f"environment {name}: ")
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("21:00-08:00", (21, 0), (8, 0)),
        ("00:30-06:15", (0, 30), (6, 15)),
        (" 23:59-00:00 ", (23, 59), (0, 0)),
    ],
)
def test_parse_quiet_hours(text, start, end):
    parsed = config_module.parse_quiet_hours(text)
    assert [(t.hour, t.minute) for t in parsed] == [start, end]


# ---------------------------------------------------------------------- deprecation


def test_a_deprecated_key_loads_with_a_warning(tmp_path):
    path = write(tmp_path / "c.toml", "[circuit-breaker]\nfailure-threshold = 3\n")
    config = load_config(path)
    assert config.circuit_breaker.failure_threshold == 3
    (warning,) = config.warnings
    assert warning.startswith(f"{path}: circuit-breaker.failure-threshold is deprecated")
    assert "failure-rate-threshold" in warning


def test_a_deprecated_key_from_the_environment_warns_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MSGSEND_CIRCUIT_BREAKER_FAILURE_THRESHOLD", "7")
    config = load_config()
    assert config.circuit_breaker.failure_threshold == 7
    (warning,) = config.warnings
    assert "environment MSGSEND_CIRCUIT_BREAKER_FAILURE_THRESHOLD" in warning
    assert "deprecated" in warning


def test_no_deprecation_warning_when_the_key_is_not_set():
    assert load_config().warnings == ()
    assert "circuit-breaker.failure-threshold" not in load_config().values


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


SECRET_FILES = [
    ('[limiter]\nredis-url = "redis://:r3dis@cache:6379/0"\n', "limiter.redis-url", "r3dis"),
    ('[alerts]\nwebhook-url = "https://hooks.example.com/T0/B0/w3bhook"\n', "alerts.webhook-url",
     "w3bhook"),
    ('[alerts]\napprise-urls = ["tgram://123:t0ken/55"]\n', "alerts.apprise-urls", "t0ken"),
    ('[sms]\nbase-url = "https://u:b4se@sms.example.com"\n', "sms.base-url", "b4se"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "secret"), SECRET_FILES)
def test_permission_warning_covers_every_secret_bearing_key(tmp_path, text, key, secret):
    path = write(tmp_path / "c.toml", text, mode=0o640)
    (warning,) = load_config(path).warnings
    assert key in warning
    assert f"chmod 600 {path}" in warning
    assert secret not in warning
    assert load_config(write(tmp_path / "private.toml", text, mode=0o600)).warnings == ()


@pytest.mark.parametrize(("text", "key", "secret"), SECRET_FILES)
def test_effective_items_redact_every_secret_bearing_key(tmp_path, text, key, secret):
    path = write(tmp_path / "c.toml", text)
    items = {k: value for k, value, _source in effective_items(load_config(path))}
    assert secret not in repr(items)
    assert "***" in repr(items[key]) or "//" in repr(items[key])


def test_effective_items_show_urls_without_their_secrets(monkeypatch):
    monkeypatch.setenv("MSGSEND_LIMITER_REDIS_URL", "redis://default:pw@cache:6379/0")
    monkeypatch.setenv("MSGSEND_ALERTS_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X")
    monkeypatch.setenv(
        "MSGSEND_ALERTS_APPRISE_URLS", '["tgram://123:abc/55", "mailto://u:p@mail.example.com"]'
    )
    items = {k: value for k, value, _source in effective_items(load_config())}
    assert items["limiter.redis-url"] == "redis://default:***@cache:6379/0"
    assert items["alerts.webhook-url"] == "https://hooks.slack.com"
    assert items["alerts.apprise-urls"] == ["tgram://***", "mailto://mail.example.com"]
    assert items["kakaotalk.base-url"] == "http://localhost:8081"


def test_secrets_never_appear_in_the_config_repr(monkeypatch):
    monkeypatch.setenv("MSGSEND_LIMITER_REDIS_URL", "redis://default:pw-redis@cache:6379/0")
    monkeypatch.setenv("MSGSEND_ALERTS_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/hook")
    monkeypatch.setenv("MSGSEND_ALERTS_APPRISE_URLS", '["tgram://123:tok-apprise/55"]')
    monkeypatch.setenv("MSGSEND_SMS_BASE_URL", "https://u:pw-base@sms.example.com")
    text = repr(load_config())
    for secret in ("pw-redis", "services/T/B/hook", "tok-apprise", "pw-base", "5678"):
        assert secret not in text, secret


def test_no_permission_warning_without_a_password(tmp_path):
    path = write(tmp_path / "c.toml", "[bulk]\nconcurrency = 2\n", mode=0o644)
    assert load_config(path).warnings == ()


# ---------------------------------------------------------------------- sample and show


def test_sample_config_parses_and_loads_back_to_the_defaults(tmp_path):
    text = render_sample_config()
    data = tomllib.loads(text)
    assert data["kakaotalk"]["auth"] == {
        "type": "basic",
        "username": "autoever",
        "password": "1234",
    }
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
    for key, spec in SCHEMA.items():
        assert (key.rsplit(".", 1)[1] in text) is not bool(spec.deprecated), key
    assert "MSGSEND_KAKAOTALK_AUTH_PASSWORD" in text
    assert "chmod 600" in text


def test_effective_items_mask_passwords_and_give_sources(tmp_path, monkeypatch):
    path = write(tmp_path / "c.toml", '[kakaotalk.auth]\npassword = "file-secret"\n')
    monkeypatch.setenv("MSGSEND_SMS_AUTH_PASSWORD", "env-secret")
    items = {key: (value, source) for key, value, source in effective_items(load_config(path))}
    assert items["kakaotalk.auth.password"] == ("***", f"file {path}")
    assert items["sms.auth.password"] == ("***", "MSGSEND_SMS_AUTH_PASSWORD")
    assert items["kakaotalk.base-url"] == ("http://localhost:8081", "default")
    assert items["retry.max-attempts"] == (3, "default")
    rendered = repr(items)
    assert "file-secret" not in rendered
    assert "env-secret" not in rendered


def test_effective_items_follow_schema_order():
    keys = [key for key, _value, _source in effective_items(load_config())]
    assert keys == [key for key in SCHEMA if key in keys]
    # The health probe's path defaults to the request's path, whatever that is set to.
    assert set(keys) == set(DEFAULTS) | {"kakaotalk.health.path", "sms.health.path"}


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


def test_show_renders_tables_inline_and_redacts_credential_headers(monkeypatch):
    """A table-valued key (formats' [PROVIDER.request] headers) shows inline, secrets hidden."""
    monkeypatch.setitem(
        config_module.SCHEMA,
        "sms.request.headers",
        config_module._Key("table", "request headers", redact="headers"),
    )
    monkeypatch.setenv(
        "MSGSEND_SMS_REQUEST_HEADERS", '{"X-Api-Key": "k3y-secret", "Accept": "application/json"}'
    )
    monkeypatch.setenv("MSGSEND_SMS_THROTTLE_STATUSES", "[429, 503]")
    text = config_module.render_effective_config(load_config())
    assert "k3y-secret" not in text
    assert 'headers = { X-Api-Key = "***", Accept = "application/json" }' in text.replace("  ", " ")
    assert "throttle-statuses = [429, 503]" in text
    assert "[sms.request]" in text
    parsed = tomllib.loads(text)  # what config show prints is valid TOML
    assert parsed["sms"]["request"]["headers"]["X-Api-Key"] == "***"


@pytest.mark.parametrize(
    ("key", "kind", "value", "shown"),
    [
        ("sms.auth.token", "str", "t0ken", "***"),
        ("sms.auth.api-key", "str", "k3y", "***"),
        (
            "sms.request.headers",
            "table",
            {"X-Api-Key": "t0ken"},
            {"X-Api-Key": "***"},
        ),
        ("sms.health.url", "url", "https://u:pw@h.example.com/x", "https://u:***@h.example.com/x"),
        ("sms.request.path", "str", "/v1/send", "/v1/send"),
    ],
)
def test_keys_added_later_are_redacted_by_name_and_kind(
    tmp_path, monkeypatch, key, kind, value, shown
):
    """A key another module registers without ``redact=`` is still hidden and still warned of."""
    monkeypatch.setitem(config_module.SCHEMA, key, config_module._Key(kind, "added later"))
    assert config_module._redacted(key, value) == shown
    secret = shown != value
    table, name = key.rsplit(".", 1)
    text = f"[{table}]\n" + tomli_w_line(name, value)
    if key == "sms.auth.token":  # a real key since formats: a token needs a token auth type
        text += 'type = "bearer"\n'
    path = write(tmp_path / "c.toml", text, mode=0o644)
    warnings = load_config(path).warnings
    assert bool(warnings) is secret
    if secret:
        assert key in warnings[0]


def tomli_w_line(name: str, value: object) -> str:
    return config_module._toml_line(name, value) + "\n"


# TOML text, key, the secret that must not appear in the error
SECRET_ERRORS = [
    ("[sms.auth]\npassword = 5678\n", "sms.auth.password", "5678", "got a number (hidden)"),
    ('[sms.auth]\ntoken = ["t0ken"]\n', "sms.auth.token", "t0ken", "got a list (hidden)"),
    ('[limiter]\nredis-url = "http://u:r3dis@cache"\n', "limiter.redis-url", "r3dis",
     "got 'http://u:***@cache'"),
    ('[alerts]\nwebhook-url = "ftp://hooks.example.com/T0/w3bhook"\n', "alerts.webhook-url",
     "w3bhook", "got 'ftp://hooks.example.com'"),
    ('[alerts]\napprise-urls = ["tgram:/t0ken"]\n', "alerts.apprise-urls", "t0ken",
     "got 'tgram://***'"),
    ('[sms]\nbase-url = "ftp://u:b4se@sms.example.com"\n', "sms.base-url", "b4se",
     "got 'ftp://u:***@sms.example.com'"),
    # a secret written where its table belongs (the password one level too high)
    ('[kakaotalk]\nauth = "hunt3r2"\n', "kakaotalk.auth", "hunt3r2", "got a string (hidden)"),
    ('kakaotalk = "hunt3r2"\n', "kakaotalk", "hunt3r2", "got a string (hidden)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "secret", "shown"), SECRET_ERRORS)
def test_an_error_about_a_secret_key_never_shows_the_secret(tmp_path, text, key, secret, shown):
    error = config_error(tmp_path, text)
    assert error.key == key
    assert secret not in str(error)
    assert shown in str(error)


def test_a_value_where_a_table_of_no_secrets_belongs_is_shown(tmp_path):
    error = config_error(tmp_path, "retry = true\n")
    assert "expected a table ([retry]), got true" in str(error)


def test_the_library_defaults_are_the_configurations() -> None:
    """A library user without a config file gets what `msgsend` does without one."""
    from msgsend.bulk import BulkOptions
    from msgsend.circuit import CircuitBreaker
    from msgsend.retry import RetryPolicy

    defaults = config_module.DEFAULTS
    retry, breaker, bulk = RetryPolicy(), CircuitBreaker("kakaotalk"), BulkOptions()
    assert retry.total == defaults["retry.max-attempts"]
    assert retry.backoff_factor == defaults["retry.backoff-delay"] / 1000
    assert retry.multiplier == defaults["retry.multiplier"]
    assert retry.backoff_max == defaults["retry.max-delay"] / 1000
    assert retry.max_retry_after == defaults["retry.max-retry-after"]
    assert breaker.window_size == defaults["circuit-breaker.window-size"]
    assert breaker.minimum_calls == defaults["circuit-breaker.minimum-calls"]
    assert breaker.failure_rate_threshold == defaults["circuit-breaker.failure-rate-threshold"]
    assert breaker.reset_timeout == defaults["circuit-breaker.reset-timeout"]
    assert bulk.concurrency == defaults["bulk.concurrency"]
    assert bulk.max_outage == defaults["bulk.max-outage"]
