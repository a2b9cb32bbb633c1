"""plugin_config from JSON (options and environment) or a TOML table; each worker's settings
under `--workers N`."""

from pathlib import Path

import pytest

from edgecascade.edge.serving.settings import ConfigError, load_settings
from edgecascade.edge.serving.workers import worker_settings


def test_plugin_config_from_json_or_a_toml_table(tmp_path, monkeypatch):
    options = {"insecure": True, "plugin_config": '{"NUM_STREAMS": 2, "ENABLE_CPU_PINNING": true}'}
    settings = load_settings(None, options)
    assert settings.plugin_config == {"NUM_STREAMS": 2, "ENABLE_CPU_PINNING": True}
    config = tmp_path / "edge.toml"
    config.write_text('insecure = true\n[plugin_config]\nPERFORMANCE_HINT = "THROUGHPUT"\n')
    assert load_settings(config).plugin_config == {"PERFORMANCE_HINT": "THROUGHPUT"}
    monkeypatch.setenv("EDGECASCADE_PLUGIN_CONFIG", '{"INFERENCE_NUM_THREADS": 1}')
    assert load_settings(config).plugin_config == {"INFERENCE_NUM_THREADS": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{NUM_STREAMS: 2}", "not JSON"),
        ("[2]", "give a JSON object of OpenVINO properties"),
        ('{"NUM_STREAMS": [2]}', "NUM_STREAMS"),
    ],
)
def test_plugin_config_that_is_no_object_of_values(text, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load_settings(
            None, {"insecure": True, "plugin_config": text}, {"plugin_config": "--plugin-config"}
        )
    assert "--plugin-config" in str(err.value)


def test_each_worker_gets_its_metrics_port_examples_file_and_budget_share():
    settings = load_settings(
        None,
        {"insecure": True, "workers": 3, "port": 0, "metrics_port": 9100, "http_port": 8000,
         "escalations_per_second": 6.0, "escalations_per_day": 100,
         "examples_file": Path("store/edge.sqlite")},
    )  # fmt: skip
    two = worker_settings(settings, 2, 50123, 8000)
    assert (two.port, two.http_port, two.metrics_port, two.workers) == (50123, 8000, 9102, 1)
    assert two.examples_file == Path("store/edge-worker2.sqlite")
    assert (two.escalations_per_second, two.escalations_per_day) == (2.0, 33)
    assert two.escalation_burst is None
    off = load_settings(None, {"insecure": True, "workers": 2})
    assert worker_settings(off, 1, 50123, 0).metrics_port == 0  # no metrics: none per worker
