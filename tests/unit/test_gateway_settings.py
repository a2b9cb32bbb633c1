"""Gateway settings: TOML file < EDGECASCADE_GATEWAY_* environment < options; each bad value is
named with where it came from; the serve command's help takes its defaults from the settings."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecascade.cloud.common.settings import ConfigError
from edgecascade.edge.cli import app
from edgecascade.router.gateway.settings import GatewaySettings, load_gateway_settings
from tests.helpers import words


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    return config


def test_options_override_the_environment_which_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path,
        'upstream = ["triton-a:8001"]\nport = 6000\nprobe_interval_s = 2.0\ngrace_s = 2\n'
        'registry = "/srv/registry"\n',
    )
    monkeypatch.setenv("EDGECASCADE_GATEWAY_PORT", "7000")
    monkeypatch.setenv("EDGECASCADE_GATEWAY_UPSTREAM", "triton-b:8001, triton-c:9001")
    monkeypatch.setenv("EDGECASCADE_GATEWAY_METRICS_PORT", "9101")
    settings = load_gateway_settings(config, {"port": 8000, "grace_s": None})
    assert settings.upstream == ["triton-b:8001", "triton-c:9001"]  # env, comma-separated
    assert (settings.port, settings.metrics_port) == (8000, 9101)  # option, env
    assert (settings.probe_interval_s, settings.grace_s) == (2.0, 2)  # file; None ignored
    assert settings.registry == Path("/srv/registry") and settings.host == "127.0.0.1"
    monkeypatch.delenv("EDGECASCADE_GATEWAY_UPSTREAM")
    assert load_gateway_settings(config).upstream == ["triton-a:8001"]


def test_each_bad_value_names_the_setting_and_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, 'upstream = ["triton:8001", "triton"]\nprobe_intervl_s = 1\n')
    monkeypatch.setenv("EDGECASCADE_GATEWAY_METRICS_PORT", "soon")
    with pytest.raises(ConfigError) as err:
        load_gateway_settings(
            config,
            {"port": 70000, "probe_interval_s": 0.0},
            {"probe_interval_s": "--probe-interval"},
        )
    assert str(err.value).splitlines() == [
        f"invalid gateway settings: upstream.1 (config file {config}): upstream 'triton' is not "
        "HOST:PORT (e.g. 127.0.0.1:8001 or [::1]:8001, without a scheme or a path)",
        "invalid gateway settings: port (option --port): Input should be less than or equal "
        "to 65535, got 70000",
        "invalid gateway settings: probe_interval_s (option --probe-interval): Input should be "
        "greater than 0, got 0.0",
        "invalid gateway settings: metrics_port (environment EDGECASCADE_GATEWAY_METRICS_PORT): "
        "Input should be a valid integer, unable to parse string as an integer, got 'soon'",
        f"invalid gateway settings: probe_intervl_s (config file {config}): unknown setting; "
        f"known: {', '.join(GatewaySettings.model_fields)}",
    ]


def test_a_missing_upstream_says_where_to_give_one() -> None:
    with pytest.raises(ConfigError) as err:
        load_gateway_settings()
    assert str(err.value) == (
        "invalid gateway settings: upstream (default): no Triton endpoint: give --upstream "
        "(EDGECASCADE_GATEWAY_UPSTREAM), --upstreams-file or --discover"
    )


def test_endpoints_may_come_from_a_file_or_dns_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from_file = load_gateway_settings(options={"upstreams_file": "upstreams.txt"})
    assert from_file.upstream == [] and from_file.upstreams_file == Path("upstreams.txt")
    with pytest.raises(ConfigError, match=re.escape("dns_server (option --dns-server): dns_")):
        load_gateway_settings(options={"upstream": ["t:8001"], "dns_server": "10.0.0.10:53"})
    with pytest.raises(ConfigError, match="dns_server 'dns' is not HOST:PORT"):
        load_gateway_settings(options={"dns_server": "dns"})
    monkeypatch.setenv("EDGECASCADE_GATEWAY_DISCOVER", "_grpc._tcp.triton.ns.svc.cluster.local")
    monkeypatch.setenv("EDGECASCADE_GATEWAY_DNS_SERVER", "10.0.0.10:53")
    from_dns = load_gateway_settings(options={"health_port": 8003})
    assert from_dns.discover == "_grpc._tcp.triton.ns.svc.cluster.local"
    assert (from_dns.dns_server, from_dns.health_port) == ("10.0.0.10:53", 8003)


@pytest.mark.parametrize(
    ("content", "expected"), [(None, "does not exist"), ("port = [", "is not valid TOML")]
)
def test_unreadable_config_files_are_config_errors(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    config = tmp_path / "gateway.toml"
    if content is not None:
        config.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_gateway_settings(config)


def test_serve_names_the_flag_that_was_given_and_exits_2() -> None:
    args = [
        "router",
        "serve",
        "--upstream",
        "triton:8001",
        "--probe-interval",
        "0",
        "--grace",
        "-1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: invalid gateway settings: probe_interval_s (option "
        "--probe-interval): Input should be greater than 0, got 0.0",
        "invalid gateway settings: grace_s (option --grace): Input should be greater than or "
        "equal to 0, got -1",
    ]


def test_serve_help_takes_its_defaults_from_the_settings() -> None:
    text = words(CliRunner().invoke(app, ["router", "serve", "--help"]).output)
    fields = GatewaySettings.model_fields
    for flag, name in [
        ("--port", "port"),
        ("--probe-interval", "probe_interval_s"),
        ("--grace", "grace_s"),
        ("--host", "host"),
        ("--metrics-port", "metrics_port"),
        ("--health-port", "health_port"),
    ]:
        assert f"{flag} <" in text
        assert f"{fields[name].description} (default {fields[name].default})" in text
    for flag, name in [
        ("--upstream", "upstream"),
        ("--upstreams-file", "upstreams_file"),
        ("--discover", "discover"),
        ("--dns-server", "dns_server"),
    ]:
        assert f"{flag} <" in text and fields[name].description[:40] in text
    assert "(required)" not in text  # any one source of endpoints will do


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tls_cert": "g.pem"}, "tls_key (default): tls_cert and tls_key go together"),
        ({"tls_ca": "ca.pem"}, "tls_ca (option --tls-ca): tls_ca needs tls_cert"),
        (
            {"tls_cert": "g.pem", "tls_key": "g.key", "require_client_cert": True},
            "require_client_cert needs tls_ca",
        ),
        ({"triton_cert": "c.pem", "triton_key": "c.key"}, "triton_cert needs triton_ca"),
        ({"triton_ca": "ca.pem", "triton_cert": "c.pem"}, "triton_cert and triton_key go"),
        ({"triton_admin_key_file": "k"}, "triton_admin_key_file needs callers"),
    ],
)
def test_security_settings_that_need_others_say_which(given: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_gateway_settings(None, {"upstream": ["triton:8001"], **given})


def test_every_security_setting_together_is_accepted() -> None:
    settings = load_gateway_settings(
        None,
        {
            "upstream": ["triton:8001"],
            **{"tls_cert": "g.pem", "tls_key": "g.key", "tls_ca": "ca.pem"},
            **{"require_client_cert": True, "callers": "callers.json"},
            **{"triton_ca": "ca.pem", "triton_cert": "c.pem", "triton_key": "c.key"},
            **{"triton_server_name": "triton", "triton_admin_key_file": "admin.key"},
        },
    )
    assert settings.require_client_cert and settings.triton_server_name == "triton"
