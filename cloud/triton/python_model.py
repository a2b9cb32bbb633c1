"""Triton python-backend model (copied as ``<version>/model.py``): runs ``model.onnx`` on CPU
with OpenVINO, every request of a dynamic batch in one inference.

Config parameters: ``site_packages`` (os.pathsep-separated, put on sys.path first: the stub
does not see the launcher's PYTHONPATH), ``performance_hint`` (LATENCY | THROUGHPUT),
``num_threads`` (optional; default: every core this process may use).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import triton_python_backend_utils as pb_utils

if TYPE_CHECKING:  # imported in initialize, once site_packages is on sys.path
    import numpy as np
    from numpy.typing import NDArray

    Images = NDArray[np.uint8]  # [N, H, W, C]
    Logits = NDArray[np.float32]  # [N, classes]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        for path in reversed(params.get("site_packages", "").split(os.pathsep)):
            if path and path not in sys.path:
                sys.path.insert(0, path)
        import numpy as np
        import openvino as ov

        self.np = np
        threads = int(params.get("num_threads") or len(os.sched_getaffinity(0)))
        onnx = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        compiled = ov.Core().compile_model(
            str(onnx),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": params.get("performance_hint", "LATENCY"),
                "INFERENCE_NUM_THREADS": threads,
            },
        )
        self.infer_request = compiled.create_infer_request()
        self.output = compiled.output(OUTPUT_NAME)
        dims = next(i["dims"] for i in config["input"] if i["name"] == INPUT_NAME)
        self._infer(np.zeros([1, *map(int, dims)], dtype=np.uint8))  # warm-up

    def execute(self, requests: list[Any]) -> list[Any]:
        """One OpenVINO inference over all requests' images, split back per request."""
        np = self.np
        responses: list[Any] = [None] * len(requests)
        images: list[Images] = []
        owners: list[int] = []
        for i, request in enumerate(requests):
            try:
                images.append(pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy())
                owners.append(i)
            except Exception as exc:  # noqa: BLE001 - becomes this request's error
                responses[i] = _error(exc)
        if images:
            try:
                logits = self._infer(np.concatenate(images) if len(images) > 1 else images[0])
                bounds = np.cumsum([len(image) for image in images])[:-1]
                for i, part in zip(owners, np.split(logits, bounds)):
                    tensor = pb_utils.Tensor(OUTPUT_NAME, np.ascontiguousarray(part))
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[tensor])
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets it
                for i in owners:
                    responses[i] = _error(exc)
        return responses

    def finalize(self) -> None:
        self.infer_request = None

    def _infer(self, batch: Images) -> Logits:
        """float32 logits [N, classes] for uint8 [N, H, W, C] images."""
        logits: Logits = self.infer_request.infer({INPUT_NAME: batch})[self.output].astype(
            self.np.float32
        )
        return logits


def _error(exc: Exception) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
    )
