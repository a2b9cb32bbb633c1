"""HAProxy, the gateway's data plane: the configuration it runs with, and its process.

Every request is balanced on its own (HTTP/2 end to end, least outstanding streams) over the
Triton endpoints that pass both checks: HAProxy's own connect check, and the gateway's health
agent, which answers for each endpoint whether Triton says it is ready; while none is ready
(Triton loading a model is not, under strict readiness), over those that accept connections.
A unary call is buffered (up to `BUFFER_BYTES`) so that one whose endpoint refuses the
connection or dies before answering is retried on another. ModelStreamInfer streams go through
unbuffered, without retry; the ModelSync service, when served, goes to the gateway's own gRPC
server. HAProxy's Prometheus exporter serves the per-endpoint counters, health and timings;
with `count_codes`, every answer is also counted by method and gRPC status in a stick table
(`GRPC_CODES`), which `metrics.py` reads.

Only an allow-list of methods goes through (`ALLOWED_METHODS`): inference, metadata, readiness
and liveness, statistics, gRPC health and ModelSync. Without a caller file, anything else,
Triton's model-repository (load, unload, index), shared-memory, trace and log methods included,
is answered by HAProxy itself with gRPC status PERMISSION_DENIED. Each refusal rule only marks
the request (the first one wins); one rule then answers it, counted like any other answer.

With a caller file (`CallerMaps`), HAProxy itself authorizes every KServe call against maps
generated from it, so that inference costs no Python on the way: the sha256 of the bearer token
(or, without a token, the common name of a verified client certificate) maps to the caller's
scopes, and each method needs the scope `auth.METHOD_SCOPES` gives it (UNAUTHENTICATED,
PERMISSION_DENIED otherwise, as `auth.Authorizer` answers). Model control and shared memory are
then let through for `admin` callers only, with Triton's restricted-protocol key added on the
way (`admin_key`; the header is stripped from every other request). gRPC health stays open;
ModelSync calls go on to the gateway's own server, whose `auth.Authorizer` checks them. Calls
that come in on `rest_socket` (a unix socket in the gateway's 0700 folder) are the gateway's
REST face's, which has checked the caller the same way: they skip this check, not the allow-list.

With `access_log`, HAProxy writes one line per request to its stdout (the gateway's), in the
gateway's log format (HAProxy's HTTP log format, or a JSON object with logger "haproxy"), with
the W3C trace id and parent span id of the request's `traceparent`, which goes on to Triton
untouched: that line is the gateway's hop in an edge's trace.

TLS: `FrontendTls` terminates TLS from edges (HTTP/2 by ALPN; client certificates verified
against a CA, optional or required), `BackendTls` re-encrypts to Triton, verifying its
certificate and showing the gateway's own for Triton's mutual TLS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecascade.cloud.common.auth import (
    HOW_TO_AUTHENTICATE,
    SCOPES,
    TOKEN,
    Callers,
    service_methods,
)
from edgecascade.cloud.common.launcher import ChildProcess
from edgecascade.cloud.triton.server import ADMIN_KEY_HEADER

KSERVE = "/inference.GRPCInferenceService/"
MODEL_SYNC = "/edgecascade.v1.ModelSync/"
HEALTH = "/grpc.health.v1.Health/"
# What callers of the gateway may call; every other path is refused (PERMISSION_DENIED).
KSERVE_ALLOWED = service_methods(KSERVE, "status", "infer")
MODEL_SYNC_METHODS = service_methods(MODEL_SYNC, "sync")
ALLOWED_METHODS = (
    *(KSERVE + m for m in KSERVE_ALLOWED),
    HEALTH + "Check",
    HEALTH + "Watch",
)
# With a caller file, the KServe methods that `admin` callers may also use.
KSERVE_ADMIN = tuple(KSERVE + m for m in service_methods(KSERVE, "admin"))
# The methods answers are counted under by name, allowed or not; any other path is OTHER_METHOD.
KNOWN_METHODS = (
    *ALLOWED_METHODS,
    *KSERVE_ADMIN,
    *(MODEL_SYNC + m for m in MODEL_SYNC_METHODS),
)
GRPC_PERMISSION_DENIED = 7
GRPC_UNAUTHENTICATED = 16
DENIED_MESSAGE = "is not allowed through the gateway (model control goes to Triton directly)"
DENIED_WITH_CALLERS = "is open to no caller of this gateway"
# A unary request that fits in one buffer is retried on another endpoint even when its own dies
# mid-request; a larger one only when the connection fails (else UNAVAILABLE). Measured per call
# with a 784 B request: 64 KiB buffers +0.2 ms, 128 KiB +0.33, 1 MiB +1.4 to 2.5 ms.
BUFFER_BYTES = 64 << 10
CHECK_TIMEOUT_S = 1.0  # how long a check (connect or agent) may take, whatever the interval
SBIN = ("/usr/local/sbin", "/usr/sbin")
# Every endpoint has two server lines (checked by the agent, and a connect-checked backup) at one
# address, which HAProxy refuses by default when it re-resolves names at run time; connect
# checks skip TLS unless a server line asks for it (see `GatewayConfig.servers`).
_DEFAULT_SERVER = (
    "    default-server init-addr last,libc,none resolvers system resolve-opts allow-dup-ip"
    " no-check-ssl"
)
TRITON, STREAMS = "triton", "triton_streams"  # the backends of unary calls and of streams
REST_BIND = "rest"  # the bind of the gateway's REST face, whose calls it has checked itself
# Answers counted by "method|grpc-status header|HTTP status" (at most a few hundred keys: methods
# outside the allow-list count as OTHER_METHOD); `router.gateway.metrics` reads it.
GRPC_CODES = "grpc_codes"
GRPC_CODES_TABLE = "type string len 128 size 4k store gpc0"
OTHER_METHOD = "other"
CODE, MESSAGE = "txn.grpc_code", "txn.grpc_message"  # of a refusal, when one is made
METHOD, KEY = "txn.grpc_method", "txn.grpc_key"
# How often a unary call is retried on another endpoint when its own fails (connect, or dies
# before answering): more than the endpoints leaving at once.
RETRIES = 3
INSTALL_HINT = "install HAProxy >= 2.4 (Debian/Ubuntu: apt-get install haproxy)"


@dataclass(frozen=True)
class FrontendTls:
    """TLS from edges: `pem` holds the gateway's certificate chain and then its key; client
    certificates are verified against `ca` when sent (required with `require_client_cert`)."""

    pem: Path
    ca: Path | None = None
    require_client_cert: bool = False

    def bind_options(self) -> str:
        options = f" ssl crt {self.pem} alpn h2"
        if self.ca is not None:
            verify = "required" if self.require_client_cert else "optional"
            options += f" ca-file {self.ca} verify {verify}"
        return options


@dataclass(frozen=True)
class BackendTls:
    """TLS to Triton: its certificate verified against `ca` (and, with `server_name`, that
    name checked); `pem` (chain, then key) is shown for Triton's mutual TLS."""

    ca: Path
    pem: Path | None = None
    server_name: str | None = None

    def server_options(self) -> str:
        options = f" ssl verify required ca-file {self.ca} alpn h2"
        if self.pem is not None:
            options += f" crt {self.pem}"
        if self.server_name is not None:
            options += f" verifyhost {self.server_name} sni str({self.server_name})"
        return options


@dataclass(frozen=True)
class CallerMaps:
    """HAProxy maps from a caller file: sha256 hex of each token, and each certificate's
    common name, to `,scope,scope,` (commas around each, so that a scope matches whole)."""

    tokens: Path
    certificates: Path

    @classmethod
    def write(cls, callers: Callers, folder: Path) -> CallerMaps:
        """Write both maps into `folder` (0600: who may do what)."""
        maps = cls(folder / "tokens.map", folder / "certificates.map")
        for path, pairs in (
            (maps.tokens, [(c.token_sha256, c) for c in callers.callers if c.token_sha256]),
            (maps.certificates, [(c.certificate, c) for c in callers.callers if c.certificate]),
        ):
            lines = [f"{key} ,{','.join(caller.scopes)},\n" for key, caller in pairs]
            path.touch(mode=0o600)
            path.write_text("".join(lines))
        return maps


@dataclass(frozen=True)
class GatewayConfig:
    """What the gateway's HAProxy serves: `listen` (host:port) in front of `upstreams` (fixed
    at start) and of the endpoints discovery adds at run time through `admin_socket`."""

    upstreams: Sequence[str]
    listen: str
    agent_port: int
    check_interval_s: float = 0.5
    model_sync: str | None = None  # host:port of the gateway's ModelSync server
    metrics: str | None = None  # bind address of HAProxy's Prometheus exporter (GET /metrics)
    grace_s: float = 5.0
    tls: FrontendTls | None = None
    upstream_tls: BackendTls | None = None
    callers: CallerMaps | None = None
    admin_key: str | None = None  # Triton's restricted-protocol key, for admin callers
    health: str | None = None  # host:port of the gateway's own gRPC health server
    admin_socket: Path | None = None  # HAProxy's runtime API: endpoints added later, counts
    access_log: bool = False  # one line per request on stdout, with its trace id
    log_format: str = "default"  # of the access log: "default" (HAProxy's) or "json"
    rest_socket: Path | None = None  # where the gateway's REST face sends its checked calls
    count_codes: bool = False  # count answers by method and gRPC status (`GRPC_CODES` table)

    @staticmethod
    def server_name(index: int) -> str:
        return f"triton{index}"

    def servers(self, backend: str, name: str, address: str, tracked: bool) -> list[str]:
        """The `server` arguments (name, address, options) of one endpoint in `backend`: the
        agent-checked server and its connect-checked backup. `tracked`: the streams backend
        follows the checks of the `triton` backend (HAProxy cannot track dynamic servers)."""
        ssl = self.upstream_tls.server_options() if self.upstream_tls else ""
        interval = f"{max(1, round(self.check_interval_s * 1000))}ms"
        check = f"check inter {interval} fall 1 rise 1"
        if tracked:
            return [
                f"{name} {address} proto h2{ssl} track {TRITON}/{name}",
                f"{name}-live {address} proto h2{ssl} backup track {TRITON}/{name}-live",
            ]
        # The agent asks this server's readiness over a kept, verified TLS channel, so its
        # connect check is a bare connect; the backup has no agent, so its check is a TLS
        # handshake (`check-ssl`). HAProxy 2.6 checks a configured server with `ssl` over TLS
        # unless told not to (`no-check-ssl`, which it refuses for one added at run time, so
        # `_DEFAULT_SERVER` says it) and one added at run time over TLS only with `check-ssl`.
        backup_check = f"check-ssl {check}" if ssl else check
        return [
            f"{name} {address} proto h2{ssl} {check} agent-check agent-addr 127.0.0.1 "
            f"agent-port {self.agent_port} agent-inter {interval} agent-send {name}",
            # The same endpoint, used only while none is ready: a Triton loading a model
            # is not ready (strict readiness) but serves the versions it has.
            f"{name}-live {address} proto h2{ssl} {backup_check} backup",
        ]

    def render(self) -> str:
        """The haproxy.cfg text."""
        if not self.upstreams and self.admin_socket is None:
            raise ValueError("the gateway needs at least one Triton endpoint (host:port)")
        if self.admin_key is not None and self.callers is None:
            raise ValueError("Triton's admin key is for admin callers: it needs a caller file")
        names = [(self.server_name(i), url) for i, url in enumerate(self.upstreams)]
        servers = [f"    server {s}" for n, u in names for s in self.servers(TRITON, n, u, False)]
        tracked = [f"    server {s}" for n, u in names for s in self.servers(STREAMS, n, u, True)]
        if self.upstream_tls is not None and self.admin_socket is not None:
            # Servers added at run time may only name TLS files that the configuration loads.
            ssl = self.upstream_tls.server_options()
            servers.append(f"    server tls-files 127.0.0.1:1 proto h2{ssl} disabled")
        routes = [f"    use_backend model_sync if {{ path_beg {MODEL_SYNC} }}"] * bool(
            self.model_sync
        ) + [f"    use_backend health if {{ path_beg {HEALTH} }}"] * bool(self.health)
        allowed = list(ALLOWED_METHODS)
        if self.model_sync:
            allowed += [MODEL_SYNC + m for m in MODEL_SYNC_METHODS]
        if self.callers:
            allowed += KSERVE_ADMIN
        message = DENIED_WITH_CALLERS if self.callers else DENIED_MESSAGE
        deny = [
            f"    http-request del-header {ADMIN_KEY_HEADER}",  # only the gateway adds it
            f"    acl allowed_method path {' '.join(allowed)}",
            f"    acl refused var({CODE}) -m found",
            *self._method_label(),
            *_refuse(GRPC_PERMISSION_DENIED, f"%[path] {message}", "!allowed_method"),
            *self._authorization(),
            *self._answer_refused(),
            *self._admin_key(),
        ]
        admin = f"    stats socket {self.admin_socket} mode 600 level admin"
        lines = [
            "global",
            *[admin] * bool(self.admin_socket),
            *["    log stdout format raw local0 info"] * self.access_log,
            "    noreuseport",  # a port held by another program is an error, never shared
            f"    tune.bufsize {BUFFER_BYTES}",
            f"    hard-stop-after {self.grace_s:g}s",
            "defaults",
            "    mode http",
            "    timeout connect 250ms",  # also the pause before retrying the same endpoint
            f"    timeout check {CHECK_TIMEOUT_S:g}s",
            "    timeout http-request 30s",
            "    timeout client 1h",
            "    timeout server 1h",
            "frontend kserve",
            f"    bind {self.listen} proto h2{self.tls.bind_options() if self.tls else ''}",
            *[f"    bind unix@{self.rest_socket} mode 600 name {REST_BIND} proto h2"]
            * bool(self.rest_socket),
            *(access_log(self.log_format) if self.access_log else []),
            *deny,
            *routes,
            *self._count_responses(),
            f"    use_backend {STREAMS} if {{ path {KSERVE}ModelStreamInfer }}",
            f"    default_backend {TRITON}",
            # Endpoint names resolve at run time too (k8s pods come and go), without resolv.conf's
            # search list: give fully qualified names.
            "resolvers system",
            "    parse-resolv-conf",
            f"backend {TRITON}",
            _DEFAULT_SERVER,
            "    balance leastconn",
            "    option allbackups",
            "    http-reuse always",
            "    option http-buffer-request",
            f"    retries {RETRIES}",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response junk-response",
            *servers,
            f"backend {STREAMS}",
            _DEFAULT_SERVER,
            "    balance leastconn",
            "    option allbackups",
            *tracked,
        ]
        if self.metrics:
            lines += [
                "frontend metrics",
                f"    bind {self.metrics}",
                "    http-request use-service prometheus-exporter if { path /metrics }",
                "    http-request return status 404",
            ]
        if self.model_sync:
            lines += [
                "backend model_sync",
                "    timeout server 24h",
                f"    server sync {self.model_sync} proto h2",
            ]
        if self.health:
            lines += ["backend health", f"    server health {self.health} proto h2"]
        if self.count_codes:
            lines += [f"backend {GRPC_CODES}", f"    stick-table {GRPC_CODES_TABLE}"]
        return "\n".join(lines) + "\n"

    def _method_label(self) -> list[str]:
        """The method each answer is counted under: its path when it is one of KNOWN_METHODS,
        else OTHER_METHOD (so that a scan of paths cannot grow the table)."""
        if not self.count_codes:
            return []
        return [
            f"    acl known_method path {' '.join(KNOWN_METHODS)}",
            f"    http-request set-var({METHOD}) path if known_method",
            f"    http-request set-var({METHOD}) str({OTHER_METHOD}) unless known_method",
        ]

    def _count(self, key: str, phase: str, condition: str = "") -> list[str]:
        """`phase`'s rules that count one answer under `key` (a log-format) in GRPC_CODES."""
        if not self.count_codes:
            return []
        when = f" if {condition}" if condition else ""
        return [
            f'    {phase} set-var-fmt({KEY}) "{key}"{when}',
            f"    {phase} track-sc0 var({KEY}) table {GRPC_CODES}{when}",
            f"    {phase} sc-inc-gpc0(0){when}",
        ]

    def _count_responses(self) -> list[str]:
        """Count every answer that came from a server (Triton, the gateway's own): a gRPC
        error is a trailers-only answer, its status in the headers; without one, the status
        came in the trailers after the answer (OK for a unary call that has a message)."""
        return self._count(f"%[var({METHOD})]|%[res.hdr(grpc-status)]|%[status]", "http-response")

    def _answer_refused(self) -> list[str]:
        """The one rule that answers a refused request (the first refusal's status), counted."""
        return [
            *self._count(f"%[var({METHOD})]|%[var({CODE})]|200", "http-request", "refused"),
            "    http-request return status 200 content-type application/grpc "
            f'hdr grpc-status "%[var({CODE})]" hdr grpc-message "%[var({MESSAGE})]" if refused',
        ]

    def _admin_key(self) -> list[str]:
        """Triton's restricted-protocol key on admin callers' admin calls (only they get this
        far with an admin method)."""
        if self.admin_key is None:
            return []
        return [f"    http-request set-header {ADMIN_KEY_HEADER} {self.admin_key} if needs_admin"]

    def _authorization(self) -> list[str]:
        """The frontend's rules that identify the caller and check its scope (see the module
        docstring); none without a caller file."""
        if self.callers is None:
            return []
        checked = f"!open_method !{{ so_name {REST_BIND} }}"  # REST: checked by its face
        token = "req.fhdr(authorization),regsub(^[Bb]earer\\ ,),digest(sha256),hex,lower"
        rules = [
            f"    acl open_method path_beg {HEALTH} {MODEL_SYNC}",  # ModelSync: its Authorizer
            "    acl has_token req.hdr_cnt(authorization) gt 0",
            f"    acl bearer req.fhdr(authorization) -m reg ^[Bb]earer\\ {TOKEN.pattern}$",
            *_refuse(
                GRPC_UNAUTHENTICATED,
                "send one authorization entry, not two",
                f"{checked} {{ req.hdr_cnt(authorization) gt 1 }}",
            ),
            *_refuse(
                GRPC_UNAUTHENTICATED,
                f"the authorization metadata is not Bearer <token>: {HOW_TO_AUTHENTICATE}",
                f"{checked} has_token !bearer",
            ),
            f"    http-request set-var(txn.scopes) {token},map({self.callers.tokens}) if bearer",
        ]
        if self.tls is not None:
            rules.append(
                "    http-request set-var(txn.scopes) "
                f"ssl_c_s_dn(cn),map({self.callers.certificates}) "
                "if !has_token { ssl_c_used } { ssl_c_verify 0 }"
            )
        unknown = f"{checked} !{{ var(txn.scopes) -m found }}"
        rules += [
            *_refuse(
                GRPC_UNAUTHENTICATED,
                "the bearer token is not known to this gateway (revoked, mistyped or made for "
                f"another deployment): {HOW_TO_AUTHENTICATE}",
                f"{unknown} has_token",
            ),
            *_refuse(
                GRPC_UNAUTHENTICATED,
                "no credentials, or a client certificate that is not a caller of this gateway: "
                + HOW_TO_AUTHENTICATE,
                unknown,
            ),
        ]
        for scope in SCOPES:
            methods = [KSERVE + m for m in service_methods(KSERVE, scope)]
            if not methods:
                continue
            rules += [
                f"    acl needs_{scope} path {' '.join(methods)}",
                *_refuse(
                    GRPC_PERMISSION_DENIED,
                    f"%[path] needs scope '{scope}': use a token with '{scope}' or add the "
                    "scope to this caller",
                    f"{checked} needs_{scope} !{{ var(txn.scopes) -m sub ,{scope}, }}",
                ),
            ]
        return rules


TRACEPARENT = "txn.traceparent"
_TRACE_ID = f"%[var({TRACEPARENT}),field(2,-),json(utf8s)]"
_PARENT_ID = f"%[var({TRACEPARENT}),field(3,-),json(utf8s)]"
# HAProxy's own HTTP log format (option httplog), then the trace id; "-" when none came.
ACCESS_TEXT = (
    "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %{+Q}r "
    f"trace_id={_TRACE_ID} span_id={_PARENT_ID}"
)
ACCESS_JSON = (
    '{"time":"%[date,utime(%Y-%m-%dT%H:%M:%S+00:00)]","level":"INFO","logger":"haproxy",'
    '"message":"%HM %[capture.req.uri,json(utf8s)] %ST",'
    f'"trace_id":"{_TRACE_ID}","span_id":"{_PARENT_ID}",'
    '"status":%ST,"duration_ms":%Ta,"server":"%b/%s","client":"%ci:%cp"}'
)


def access_log(log_format: str) -> list[str]:
    """The frontend's lines that log each request in `log_format` ("default" or "json")."""
    text = {"default": ACCESS_TEXT, "json": ACCESS_JSON}[log_format]
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return [
        "    log global",
        "    option dontlognull",  # connections that send nothing (HAProxy's own ready check)
        f"    http-request set-var({TRACEPARENT}) req.hdr(traceparent)",
        f'    log-format "{quoted}"',
    ]


def _refuse(status: int, message: str, condition: str) -> list[str]:
    """Rules that mark a request refused with gRPC `status` and `message` (a log-format) when
    `condition` holds and no earlier rule refused it; `_answer_refused` then answers it with a
    gRPC "trailers-only" answer, HTTP 200 whose headers carry the status."""
    first = f"{condition} !refused"
    return [
        f'    http-request set-var-fmt({MESSAGE}) "{message}" if {first}',
        f"    http-request set-var({CODE}) int({status}) if {first}",
    ]


def haproxy_binary() -> str:
    """The haproxy executable (PATH, then the sbin folders packages install it to), or a
    RuntimeError that says how to get one."""
    found = shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
    if found is None:
        raise RuntimeError(f"the router gateway runs HAProxy, which is not on PATH: {INSTALL_HINT}")
    return found


def check_config(path: Path) -> None:
    """Raise ValueError with HAProxy's own words unless `haproxy -c` accepts the file."""
    result = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        alerts = [line for line in (result.stdout + result.stderr).splitlines() if "ALERT" in line]
        raise ValueError(f"HAProxy rejects {path}:\n" + "\n".join(alerts))


class HAProxy:
    """HAProxy in the foreground as a child of this process (it dies with it; without a log
    file its warnings, such as endpoints going down, land on our stderr), ready once `listen`
    (host:port) accepts connections; `stop` lets in-flight requests finish (soft stop, SIGUSR1)
    for up to the grace period, then kills it. Start it from the event loop's thread, which
    lives as long as the gateway."""

    def __init__(self, config_path: Path, listen: str, log_path: Path | None = None) -> None:
        self.config_path = config_path
        self.process = _HAProxyProcess(config_path, listen, log_path)

    async def start(self, timeout_s: float = 10.0) -> None:
        """Check the configuration, launch HAProxy and wait (off the loop) until it listens."""
        check_config(self.config_path)
        self.process.launch()
        await asyncio.to_thread(self.process.wait_ready, timeout_s)

    async def exited(self) -> int:
        """Wait for HAProxy to exit on its own; its exit status."""
        return await self.process.exited()

    async def stop(self, grace_s: float) -> None:
        # HAProxy's own hard-stop-after (the same grace) comes first.
        await self.process.stop_async(grace_s + 1.0)


class _HAProxyProcess(ChildProcess):
    name = "HAProxy"

    def __init__(self, config_path: Path, listen: str, log_path: Path | None) -> None:
        super().__init__(
            [haproxy_binary(), "-db", "-f", str(config_path)],
            log_path,
            stop_signal=signal.SIGUSR1,  # stop listening, finish what is in flight
        )
        host, port = listen.rsplit(":", 1)
        self._listen = (host.strip("[]"), int(port))

    def ready(self) -> bool:
        with socket.create_connection(self._listen, timeout=CHECK_TIMEOUT_S):
            return True
