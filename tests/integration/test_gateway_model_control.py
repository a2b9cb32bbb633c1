"""Triton's model control is not reachable through the gateway: the real HAProxy in front of
a real Triton in explicit model-control mode answers RepositoryModelLoad, RepositoryModelUnload
and the other control methods with PERMISSION_DENIED, while inference still goes through and
the model stays loaded; model control straight to Triton still works."""

from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.router.gateway.process import GatewayProcess
from tests.integration.test_triton_server import images, infer_input

pytestmark = pytest.mark.integration


def denied(exc: grpcclient.InferenceServerException) -> None:
    assert exc.status() == "StatusCode.PERMISSION_DENIED", exc
    assert "not allowed through the gateway" in exc.message()


def test_model_control_through_the_gateway_is_refused(
    fashion_repository: Path, fashion_manifest: Manifest, tmp_path: Path
) -> None:
    name = fashion_manifest.cloud.name
    with (
        TritonServer(
            fashion_repository,
            model_control_mode="explicit",
            load_models=[name],
            log_path=tmp_path / "triton.log",
        ) as triton,
        GatewayProcess([triton.grpc_url], tmp_path / "gateway.log") as gateway,
        PLAINTEXT.triton(gateway.url) as client,
    ):
        batch = images(fashion_manifest, 2)
        assert client.infer(name, [infer_input(batch)]).as_numpy("logits").shape[0] == 2
        assert client.is_model_ready(name) and client.get_model_metadata(name).name == name
        assert client.get_model_config(name).config.name == name
        assert client.get_inference_statistics(name).model_stats

        code = {"file:1/model.py": b"import os\n"}  # Triton would run this model.py
        for call in (
            lambda: client.load_model(name, files=code),
            lambda: client.load_model("evil", config='{"backend": "python"}', files=code),
            lambda: client.unload_model(name),
            lambda: client.get_model_repository_index(),
            lambda: client.get_system_shared_memory_status(),
            lambda: client.unregister_system_shared_memory(),
            lambda: client.get_cuda_shared_memory_status(),
            lambda: client.get_trace_settings(),
            lambda: client.update_log_settings({"log_verbose_level": 1}),
        ):
            with pytest.raises(grpcclient.InferenceServerException) as caught:
                call()
            denied(caught.value)

        # The model is still there and still answers, through the gateway and directly.
        assert client.is_model_ready(name)
        assert client.infer(name, [infer_input(batch)]).as_numpy("logits").shape[0] == 2
        assert triton.control.ready_versions(name)
        with PLAINTEXT.triton(triton.grpc_url) as direct:
            assert "evil" not in {m.name for m in direct.get_model_repository_index().models}

        # An unknown method gets the same clear refusal, not Triton's UNIMPLEMENTED.
        with PLAINTEXT.channel(gateway.url) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary("/inference.GRPCInferenceService/Nonsense")(b"", timeout=5)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.RepositoryModelUnload(
                    service_pb2.RepositoryModelUnloadRequest(model_name=name), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "RepositoryModelUnload is not allowed" in caught.value.details()

        # Model control straight to Triton (how `models publish --triton` works) still does.
        triton.control.load(name)
        assert triton.control.ready_versions(name)
        assert np.isfinite(client.infer(name, [infer_input(batch)]).as_numpy("logits")).all()
