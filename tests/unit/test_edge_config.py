"""Edge agent settings: TOML file < EDGECASCADE_* environment < options, clear errors."""

import pytest

from edgecascade.edge.serving.settings import ConfigError, EdgeSettings, load_settings


def test_options_override_environment_which_overrides_the_file(tmp_path, monkeypatch):
    config = tmp_path / "edge.toml"
    config.write_text('port = 6000\nmax_in_flight = 4\ngrace_s = 1.5\ncloud_url = "triton:8001"\n')
    monkeypatch.setenv("EDGECASCADE_MAX_IN_FLIGHT", "8")
    monkeypatch.setenv("EDGECASCADE_METRICS_PORT", "9100")
    settings = load_settings(config, {"port": 7000, "grace_s": None, "insecure": True})
    assert (settings.port, settings.max_in_flight, settings.metrics_port) == (7000, 8, 9100)
    assert settings.grace_s == 1.5 and settings.cloud_url == "triton:8001"
    assert settings.max_message_bytes == 16 << 20  # default


def test_every_problem_is_named_with_where_it_came_from(tmp_path, monkeypatch):
    config = tmp_path / "edge.toml"
    config.write_text("port = 70000\nmax_in_flght = 4\n")
    monkeypatch.setenv("EDGECASCADE_GRACE_S", "soon")
    with pytest.raises(ConfigError) as err:
        load_settings(config, {"hint": "FASTEST"})
    message = str(err.value)
    assert (
        f"port (config file {config}): Input should be less than or equal to 65535, got 70000"
        in message
    )
    assert f"max_in_flght (config file {config}): unknown setting; known: family" in message
    assert "grace_s (environment EDGECASCADE_GRACE_S)" in message and "'soon'" in message
    assert "hint (option --hint)" in message and "'FASTEST'" in message


@pytest.mark.parametrize(
    ("content", "expected"), [(None, "does not exist"), ("port = [", "is not valid TOML")]
)
def test_unreadable_config_files_are_config_errors(tmp_path, content, expected):
    config = tmp_path / "edge.toml"
    if content is not None:
        config.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_settings(config)


def test_the_agent_needs_tls_unless_told_insecure(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(None, {})
    assert "tls_cert (default): the agent has no TLS certificate and key" in str(err.value)
    assert "--insecure" in str(err.value)
    with pytest.raises(ConfigError, match=r"tls_cert \(option --tls-cert\): insecure serves"):
        load_settings(None, {"insecure": True, "tls_cert": tmp_path / "a.pem"})
    with pytest.raises(ConfigError, match=r"require_client_cert \(option --require-client-cert\)"):
        load_settings(
            None,
            {"tls_cert": tmp_path / "a", "tls_key": tmp_path / "b", "require_client_cert": True},
        )
    with pytest.raises(ConfigError, match="cloud_cert and cloud_key go together"):
        load_settings(None, {"insecure": True, "cloud_cert": tmp_path / "c.pem"})
    with pytest.raises(ConfigError, match="cloud_ca .* cloud_insecure calls in plaintext"):
        load_settings(None, {"insecure": True, "cloud_insecure": True, "cloud_ca": tmp_path})


def test_addresses_and_keys_are_checked_as_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECASCADE_TRUSTED_KEYS", f"{tmp_path}/a.pub, {tmp_path}/keys")
    settings = load_settings(None, {"insecure": True})
    assert settings.trusted_key_paths == [tmp_path / "a.pub", tmp_path / "keys"]
    monkeypatch.delenv("EDGECASCADE_TRUSTED_KEYS")
    default = load_settings(None, {"insecure": True, "artifacts": tmp_path})
    assert default.trusted_key_paths == [tmp_path / "keys"]
    with pytest.raises(ConfigError, match=r"sync_url \(option --sync-url\): .* is not HOST:PORT"):
        load_settings(None, {"insecure": True, "sync_url": "http://x:1"})


def test_every_setting_has_a_description():
    assert [name for name, f in EdgeSettings.model_fields.items() if not f.description] == []
