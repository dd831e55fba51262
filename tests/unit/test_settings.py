"""Settings: every source, precedence, and clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllama.settings import Settings, SettingsError, load_settings, parse_ollama_host

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0", ("0.0.0.0", 11434)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("http://example.internal:1234", ("example.internal", 1234)),
        ("https://example.internal", ("example.internal", 443)),
        ("[::1]:7000", ("::1", 7000)),
        ("localhost/", ("localhost", 11434)),
    ],
)
def test_ollama_host(value: str, expected: tuple[str, int]) -> None:
    assert parse_ollama_host(value) == expected


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "vllama.toml"
    config.write_text('port = 1000\nmodel = "from-file"\nmax_num_seqs = 4\n')
    env = {"VLLAMA_PORT": "2000", "OLLAMA_HOST": "0.0.0.0:3000"}
    settings = load_settings({"max_num_seqs": 8}, config_file=config, environ=env)
    assert settings.port == 2000  # VLLAMA_* beats OLLAMA_HOST and the file
    assert settings.host == "0.0.0.0"  # from OLLAMA_HOST
    assert settings.model == "from-file"
    assert settings.max_num_seqs == 8  # the flag wins


def test_lists_and_urls_from_environment() -> None:
    env = {
        "VLLAMA_ENGINE_ARGS": "--swap-space 4 --foo 'a b'",
        "VLLAMA_ENGINE_URL": "http://h:1/v1/",
    }
    settings = load_settings(environ=env)
    assert settings.engine_args == ["--swap-space", "4", "--foo", "a b"]
    assert settings.engine_url == "http://h:1"
    assert settings.attached


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"VLLAMA_PORT": "not-a-port"}, "port"),
        ({"VLLAMA_PORT": "70000"}, "port"),
        ({"VLLAMA_ENGINE_URL": "ftp://x"}, "engine_url"),
        ({"OLLAMA_HOST": "h:99999"}, "OLLAMA_HOST"),
        ({"VLLAMA_RESTART_BACKOFF": "10", "VLLAMA_RESTART_BACKOFF_MAX": "1"}, "backoff"),
    ],
)
def test_bad_values_fail_with_the_name(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        load_settings(environ=env)


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "vllama.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="prot"):
        load_settings(config_file=config, environ={})


def test_every_setting_is_documented() -> None:
    doc = DOC.read_text()
    missing = [name for name in Settings.model_fields if f"| `{name}` |" not in doc]
    assert not missing, f"docs/CONFIG.md lacks {missing}"
