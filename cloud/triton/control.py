"""Triton's model-control API (explicit mode) over gRPC: load, unload, which versions are ready.

A load reads the model's folder in the repository again and serves the versions its version
policy lists: versions that appear are loaded, versions that disappear are unloaded, and the
versions that stay keep answering while that happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import tritonclient.grpc as grpcclient

from edgecascade.cloud.common.transport import PLAINTEXT, Transport


class TritonControlError(RuntimeError):
    """Triton refused a model-control request; the message is Triton's."""


class ModelControl:
    """Model control of the Triton server at `url` (host:port of its gRPC endpoint): a load or
    an unload may take `timeout_s`, a question `query_timeout_s`. `transport` carries its TLS
    and the headers that allow model control: Triton's restricted-protocol key when straight
    to Triton, an admin bearer token through a gateway."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 300.0,
        query_timeout_s: float = 10.0,
        transport: Transport = PLAINTEXT,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.query_timeout_s = query_timeout_s
        self.transport = transport

    def load(self, name: str) -> None:
        """(Re)load model `name` from the repository; returns once it is loaded."""
        with self._client() as client, self._refused(f"load {name}"):
            client.load_model(name, headers=self.transport.headers, client_timeout=self.timeout_s)

    def unload(self, name: str) -> None:
        """Unload every version of model `name`."""
        with self._client() as client, self._refused(f"unload {name}"):
            client.unload_model(name, headers=self.transport.headers, client_timeout=self.timeout_s)

    def ready_versions(self, name: str) -> list[int]:
        """The versions of model `name` that are ready to serve, lowest first."""
        with self._client() as client, self._refused("list models"):
            index = client.get_model_repository_index(
                headers=self.transport.headers, client_timeout=self.query_timeout_s
            )
        return sorted(int(m.version) for m in index.models if m.name == name and m.state == "READY")

    def _client(self) -> grpcclient.InferenceServerClient:
        return self.transport.triton(self.url)

    @contextmanager
    def _refused(self, what: str) -> Iterator[None]:
        """Triton's refusal (or a timeout) as a TritonControlError that says what was asked."""
        try:
            yield
        except grpcclient.InferenceServerException as exc:
            raise TritonControlError(f"Triton at {self.url} could not {what}: {exc}") from exc
