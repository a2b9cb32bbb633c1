"""Who may call what: callers named by a bearer token or a mutual-TLS client certificate, each
with scopes, checked by a grpc.aio server interceptor before any handler runs.

The caller file (JSON, see `Callers`) stores only the sha256 of each token; a presented token is
hashed and compared with every entry in constant time (hmac.compare_digest). No token or part of
one is ever logged or sent back.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import grpc
import grpc.aio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgecascade.cloud.common.certs import write_atomically
from edgecascade.cloud.common.errors import UserError, shown
from edgecascade.cloud.common.manifest import plain_name

log = logging.getLogger(__name__)

Scope = Literal["infer", "status", "sync", "admin"]
SCOPES: tuple[Scope, ...] = ("infer", "status", "sync", "admin")

_CASCADE = "/edgecascade.v1.Cascade/"
_KSERVE = "/inference.GRPCInferenceService/"
_SYNC = "/edgecascade.v1.ModelSync/"
_REFLECTION = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
# The scope each method needs. A method not listed here is refused to every caller.
METHOD_SCOPES: Mapping[str, Scope] = {
    **{_CASCADE + m: "infer" for m in ("Classify", "ClassifyStream")},
    _CASCADE + "GetStatus": "status",
    **{_KSERVE + m: "infer" for m in ("ModelInfer", "ModelStreamInfer")},
    **{
        _KSERVE + m: "status"
        for m in (
            "ServerLive",
            "ServerReady",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelConfig",
            "ModelStatistics",
        )
    },
    **{
        _KSERVE + m: "admin"
        for m in (
            "RepositoryIndex",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryRegister",
            "SystemSharedMemoryUnregister",
            "CudaSharedMemoryStatus",
            "CudaSharedMemoryRegister",
            "CudaSharedMemoryUnregister",
            "TraceSetting",
            "LogSettings",
        )
    },
    **{
        _SYNC + m: "sync"
        for m in ("GetManifest", "WatchManifests", "FetchArtifact", "UploadExamples")
    },
    **{prefix + "ServerReflectionInfo": "status" for prefix in _REFLECTION},
}


def service_methods(service: str, *scopes: Scope) -> tuple[str, ...]:
    """The names (without the service's path) of `service`'s methods in METHOD_SCOPES that
    need one of `scopes`, in METHOD_SCOPES' order; `service` is a path such as
    "/inference.GRPCInferenceService/"."""
    return tuple(
        m.removeprefix(service)
        for m, scope in METHOD_SCOPES.items()
        if m.startswith(service) and scope in scopes
    )


# Services every caller may use without credentials (probes).
OPEN_SERVICES = ("/grpc.health.v1.Health/",)

# RFC 6750's b64token, bounded: anything else in `authorization` is malformed.
TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{16,512}=*")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
HOW_TO_AUTHENTICATE = (
    "send the metadata `authorization: Bearer <token>` with a token made by "
    "`edgecascade auth add-token`"
)


class AuthError(UserError, ValueError):
    """A caller file that cannot be used; the message names the file and the problem."""


class Denied(Exception):
    """A call refused: its status code and a message a person can act on (never a secret)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class Caller(BaseModel):
    """One caller: a `name` (shown in logs and errors), its scopes, and how it is recognised:
    the sha256 of its bearer token, or the common name of its client certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    scopes: tuple[Scope, ...] = Field(min_length=1)
    token_sha256: str | None = None
    certificate: str | None = Field(None, description="client certificate common name")

    @field_validator("name")
    @classmethod
    def _plain(cls, name: str) -> str:
        checked: str = plain_name("caller name", name)
        return checked

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, digest: str | None) -> str | None:
        if digest is not None and not SHA256_HEX.fullmatch(digest):
            raise ValueError("token_sha256 must be 64 lowercase hex digits")
        return digest

    @model_validator(mode="after")
    def _one_credential(self) -> Caller:
        if (self.token_sha256 is None) == (self.certificate is None):
            raise ValueError(f"caller {self.name!r}: give token_sha256 or certificate, not both")
        return self


class Callers(BaseModel):
    """The caller file: `{"callers": [{"name": ..., "scopes": [...], "token_sha256": ...}]}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    callers: tuple[Caller, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Callers:
        for what, values in (
            ("name", [c.name for c in self.callers]),
            ("certificate", [c.certificate for c in self.callers if c.certificate]),
        ):
            taken = {v for v in values if values.count(v) > 1}
            if taken:
                raise ValueError(f"two callers have the same {what} {shown(min(taken))}")
        return self

    @classmethod
    def load(cls, path: Path) -> Callers:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as e:
            raise AuthError(f"caller file {path} cannot be read: {e.strerror}") from None
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise AuthError(f"caller file {path}: {where}: {first['msg']}") from None

    def save(self, path: Path) -> None:
        """Write the file (0600: it says who may do what, though it holds no token)."""
        text = json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
        write_atomically(Path(path), text.encode(), mode=0o600)

    def with_caller(self, caller: Caller) -> Callers:
        """These callers and `caller`; AuthError when its name or certificate is taken."""
        try:
            return Callers(callers=(*self.callers, caller))
        except ValidationError as e:
            raise AuthError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None

    def with_new_token(self, name: str, scopes: Iterable[Scope]) -> tuple[Callers, str]:
        """These callers and a new one `name` with a fresh random token: (callers, token).
        Only the token's hash is kept; show the token once."""
        token = secrets.token_urlsafe(32)
        caller = _caller(name=name, scopes=tuple(scopes), token_sha256=token_hash(token).hex())
        return self.with_caller(caller), token

    def with_certificate(self, name: str, common_name: str, scopes: Iterable[Scope]) -> Callers:
        """These callers and `name`, recognised by a client certificate for `common_name`."""
        return self.with_caller(_caller(name=name, scopes=tuple(scopes), certificate=common_name))


def _caller(**fields: Any) -> Caller:
    try:
        return Caller(**fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise AuthError(f"{where}: {first['msg']}" if where else first["msg"]) from None


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authorizer(grpc.aio.ServerInterceptor):
    """Refuse every call whose caller is not known (UNAUTHENTICATED) or lacks the scope its
    method needs (PERMISSION_DENIED), before the handler runs; health stays open.

    A bearer token, when sent, decides who the caller is; without one, the common name of a
    client certificate verified by mutual TLS does (see transport.Tls.require_client_cert).
    """

    def __init__(self, callers: Callers, methods: Mapping[str, Scope] = METHOD_SCOPES):
        """`methods`: the scope each method needs (a server with other services, such as a
        result sink, extends METHOD_SCOPES)."""
        self._tokens = [
            (bytes.fromhex(c.token_sha256), c) for c in callers.callers if c.token_sha256
        ]
        self._certificates = {c.certificate: c for c in callers.callers if c.certificate}
        self._methods = methods

    def authenticate(self, metadata: Iterable[tuple[str, Any]], auth: Mapping[str, Any]) -> Caller:
        """The caller that `metadata` (its bearer token) or `auth` (gRPC's auth context: the
        client certificate) names; Denied(UNAUTHENTICATED) saying what to send."""
        values = [value for key, value in metadata if key == "authorization"]
        if len(values) > 1:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "send one `authorization` entry, not two")
        if values:
            return self._token_caller(values[0])
        common_names = auth.get("x509_common_name") or []
        if common_names:
            common_name = b"".join(common_names).decode(errors="replace")
            if common_name in self._certificates:
                return self._certificates[common_name]
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                f"client certificate {shown(common_name)} is not a caller of this server: "
                "add it with `edgecascade auth add-certificate`, or " + HOW_TO_AUTHENTICATE,
            )
        raise Denied(grpc.StatusCode.UNAUTHENTICATED, f"no credentials: {HOW_TO_AUTHENTICATE}")

    def _token_caller(self, value: Any) -> Caller:
        scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
        if scheme.lower() != "bearer" or not TOKEN.fullmatch(token):
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the `authorization` metadata is not `Bearer <token>`: {HOW_TO_AUTHENTICATE}",
            )
        digest = token_hash(token)
        found = None
        for stored, caller in self._tokens:  # every entry, so the time says nothing of a match
            if hmac.compare_digest(digest, stored):
                found = caller
        if found is None:
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                "the bearer token is not known to this server (revoked, mistyped or made for "
                f"another deployment): {HOW_TO_AUTHENTICATE}",
            )
        return found

    def authorize(self, caller: Caller, method: str) -> None:
        """Denied(PERMISSION_DENIED) unless `caller` holds the scope `method` needs."""
        scope = self._methods.get(method)
        if scope is None:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{shown(method)} is open to no caller on this server",
            )
        if scope not in caller.scopes:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs scope '{scope}'; caller '{caller.name}' has "
                f"{', '.join(caller.scopes)}: use a token with '{scope}' or add the scope to "
                "this caller",
            )

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        try:
            caller = self.authenticate(context.invocation_metadata() or (), context.auth_context())
            self.authorize(caller, method)
        except Denied as e:
            log.warning("refused %s from %s: %s", shown(method), context.peer(), e)
            await context.abort(e.code, str(e))

    async def intercept_service(  # type: ignore[no-untyped-def]
        self, continuation, handler_call_details
    ):
        """The method's handler with the check in front of its behaviour."""
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return handler._replace(**{kind: self._guarded(method, behaviour)})
        return handler

    def _guarded(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._check(method, context)
                async for response in behaviour(request, context):
                    yield response

            return stream

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, context)
            return await behaviour(request, context)

        return call
