"""Triton python-backend model named after a family (copied as ``<version>/model.py``): the edge
agent's KServe model answered by the family's cloud model (see ``cloud/triton/family.py``).

Each version folder holds the pair's manifest (``manifest.json``): the cloud model and version
it asks, through a BLS call in the same server, and the preprocessing. An image that cannot be
read is that request's INVALID_ARG error; the model goes on serving.

Config parameters: ``site_packages`` (os.pathsep-separated site folders, added with their
``.pth`` files so that the editable ``edgecascade`` imports: the stub does not see the
launcher's PYTHONPATH), ``max_batch`` (images per request; the cloud model's batch limit).
"""

from __future__ import annotations

import json
import os
import site
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

INPUT_NAME, OUTPUT_NAME = "image", "logits"  # the cloud model's (cloud.common.manifest)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        for path in params.get("site_packages", "").split(os.pathsep):
            if path:
                site.addsitedir(path)
        from edgecascade.cloud.common.errors import InvalidInput
        from edgecascade.cloud.common.manifest import Manifest
        from edgecascade.cloud.triton import family

        self.family = family
        self.invalid = InvalidInput
        folder = Path(args["model_repository"]) / args["model_version"]
        self.pair = Manifest.load(folder / family.PAIR_FILE)
        self.max_batch = int(params["max_batch"])
        self.logger = pb_utils.Logger

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: Any) -> Any:
        family, cloud = self.family, self.pair.cloud
        try:
            batch = family.prepared_images(
                _input(request, family.IMAGE),
                _input(request, family.PIXELS),
                cloud.preprocessing,
                self.max_batch,
            )
        except self.invalid as exc:
            return _error(str(exc), pb_utils.TritonError.INVALID_ARG)
        try:
            result = pb_utils.InferenceRequest(
                model_name=cloud.name,
                model_version=cloud.version,
                requested_output_names=[OUTPUT_NAME],
                inputs=[pb_utils.Tensor(INPUT_NAME, batch)],
            ).exec()
            if result.has_error():
                return pb_utils.InferenceResponse(output_tensors=[], error=result.error())
            logits = pb_utils.get_output_tensor_by_name(result, OUTPUT_NAME).as_numpy()
            wanted = set(request.requested_output_names())
            outputs = [
                pb_utils.Tensor(name, tensor)
                for name, tensor in family.answer(logits).items()
                if name in wanted
            ]
            return pb_utils.InferenceResponse(output_tensors=outputs)
        except Exception as exc:  # noqa: BLE001 - a bug: this request's INTERNAL error
            self.logger.log_error(f"{self.pair.family}: {type(exc).__name__}: {exc}")
            return _error(
                f"internal error in {self.pair.family} ({type(exc).__name__}); see Triton's log",
                pb_utils.TritonError.INTERNAL,
            )


def _input(request: Any, name: str) -> Any:
    """The named input as a numpy array, None when the request does not send it."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _error(message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
