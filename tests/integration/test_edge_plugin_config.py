"""`edge serve --plugin-config JSON --nireq N`: the OpenVINO properties reach compile_model and
the infer queue (read back from the compiled model into GetStatus and the KServe model config);
a property OpenVINO refuses is one error line, exit code 2."""

import json
import subprocess

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
CONFIG = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2}


def test_plugin_config_and_nireq_take_effect(fashion_manifest, tmp_path):
    args = ("--plugin-config", json.dumps(CONFIG), "--nireq", "3")
    with EdgeProcess("fashion", None, tmp_path / "edge.log", *args) as agent:
        with PLAINTEXT.channel(agent.address) as channel:
            status = pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
        client = PLAINTEXT.triton(agent.address)
        config = client.get_model_config("fashion", as_json=True)["config"]["parameters"]
        client.close()
    assert "THROUGHPUT hint, 2 streams, 2 threads, 3 infer requests" in status.device
    in_effect = json.loads(config["plugin_config"]["string_value"])
    assert in_effect == {key: str(value) for key, value in CONFIG.items()}
    assert config["nireq"]["string_value"] == "3"
    default = EdgeProcess("fashion", None, tmp_path / "default.log")
    with default, PLAINTEXT.channel(default.address) as channel:
        status = pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
    assert "LATENCY hint, 1 streams" in status.device  # the default differs: the test can fail


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ('{"NUM_STREAMS": "many"}', "Could not read number of streams"),
        ('{"NUMSTREAMS": 2}', "CPU has no property 'NUMSTREAMS' to set"),
        ('{"PERFORMANCE_HINT": "FAST"}', "Wrong value FAST"),
    ],
)
def test_a_refused_property_is_one_line(fashion_manifest, config, expected):
    command = edgecascade_command("edge", "serve", "--insecure", "--family", "fashion",
                                  "--port", "0", "--plugin-config", config)  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: plugin_config") and expected in last, result.stderr
    assert "Traceback" not in result.stderr
