"""Triton's model-control API (explicit mode) over gRPC: load, unload, which versions are ready.

A load reads the model's folder in the repository again and serves the versions its version
policy lists: versions that appear are loaded, versions that disappear are unloaded, and the
versions that stay keep answering while that happens.
"""

from __future__ import annotations

import tritonclient.grpc as grpcclient

from edgecascade.cloud.common.transport import PLAINTEXT


class TritonControlError(RuntimeError):
    """Triton refused a model-control request; the message is Triton's."""


class ModelControl:
    """Model control of the Triton server at `url` (host:port of its gRPC endpoint)."""

    def __init__(self, url: str, timeout_s: float = 300.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def load(self, name: str) -> None:
        """(Re)load model `name` from the repository; returns once it is loaded."""
        self._control("load", name)

    def unload(self, name: str) -> None:
        """Unload every version of model `name`."""
        self._control("unload", name)

    def _control(self, action: str, name: str) -> None:
        with self._client() as client:
            try:
                getattr(client, f"{action}_model")(name, client_timeout=self.timeout_s)
            except grpcclient.InferenceServerException as exc:
                raise TritonControlError(
                    f"Triton at {self.url} could not {action} {name}: {exc}"
                ) from exc

    def ready_versions(self, name: str) -> list[int]:
        """The versions of model `name` that are ready to serve, lowest first."""
        with self._client() as client:
            try:
                index = client.get_model_repository_index().models
            except grpcclient.InferenceServerException as exc:
                raise TritonControlError(
                    f"Triton at {self.url} could not list models: {exc}"
                ) from exc
        return sorted(int(m.version) for m in index if m.name == name and m.state == "READY")

    def _client(self) -> grpcclient.InferenceServerClient:
        return PLAINTEXT.triton(self.url)
