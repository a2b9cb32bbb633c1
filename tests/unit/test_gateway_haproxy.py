"""The gateway's HAProxy configuration (checked by the real haproxy binary) and its health
agent (over real loopback sockets, against a small KServe server that can say not ready)."""

import asyncio

import pytest
from tritonclient.grpc import service_pb2

from edgecascade.router.gateway import haproxy
from edgecascade.router.gateway.gateway import HealthAgent
from edgecascade.router.gateway.haproxy import GatewayConfig, check_config
from tests.kserve_server import start_kserve


def config(**kw) -> GatewayConfig:
    kw.setdefault("upstreams", ["127.0.0.1:8001", "triton-1.cluster:8001"])
    return GatewayConfig(listen="127.0.0.1:9000", agent_port=9100, **kw)


def test_every_endpoint_is_checked_by_haproxy_and_by_the_agent(tmp_path):
    text = config(check_interval_s=0.2).render()
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    check_config(path)  # haproxy -c accepts it
    assert "bind 127.0.0.1:9000 proto h2" in text
    for name, url in (("triton0", "127.0.0.1:8001"), ("triton1", "triton-1.cluster:8001")):
        assert (
            f"server {name} {url} proto h2 check inter 200ms fall 1 rise 1 agent-check "
            f"agent-addr 127.0.0.1 agent-port 9100 agent-inter 200ms agent-send {name}"
        ) in text
        assert f"server {name}-live {url} proto h2 check inter 200ms fall 1 rise 1 backup" in text
        assert f"server {name} {url} proto h2 track triton/{name}" in text  # streams
        assert f"server {name}-live {url} proto h2 backup track triton/{name}-live" in text
    assert text.count("option allbackups") == 2  # none ready: every live one, not just one
    assert "retries 3" in text and "retry-on conn-failure empty-response" in text
    assert "model_sync" not in text and "stats socket" not in text  # nothing to discover


def test_endpoints_added_at_run_time_get_the_same_checks_and_tls(tmp_path):
    tls = haproxy.BackendTls(tmp_path / "ca.pem", tmp_path / "client.pem", "triton")
    for name in ("ca.pem", "client.pem"):
        (tmp_path / name).write_text("")
    dynamic = config(upstreams=[], admin_socket=tmp_path / "admin.sock", upstream_tls=tls)
    text = dynamic.render()
    assert f"stats socket {tmp_path / 'admin.sock'} mode 600 level admin" in text
    # HAProxy lets servers added at run time name only TLS files its configuration loads.
    assert f"server tls-files 127.0.0.1:1 proto h2{tls.server_options()} disabled" in text
    static = config(check_interval_s=0.2, upstream_tls=tls).render()
    added = config(check_interval_s=0.2, upstream_tls=tls).servers(
        "triton", "dyn0", "10.0.0.7:8001", False
    )
    for line in added:  # the same server lines as a configured endpoint's, by another name
        assert (
            f"server {line.replace('dyn0', 'triton0').replace('10.0.0.7', '127.0.0.1')}" in static
        )
    # HAProxy cannot track a dynamic server: the streams backend checks each one itself.
    assert config().servers("triton_streams", "dyn0", "10.0.0.7:8001", False) == config().servers(
        "triton", "dyn0", "10.0.0.7:8001", False
    )
    with pytest.raises(ValueError, match="at least one Triton"):
        config(upstreams=[]).render()  # neither fixed endpoints nor a runtime API


def test_only_the_backup_checks_triton_with_a_tls_handshake(tmp_path):
    """The agent-checked server's readiness comes over the agent's verified TLS channel: its
    connect check is a bare connect, not a mutual-TLS handshake every interval. HAProxy would
    check a configured `ssl` server over TLS (a dynamic one never): both are said explicitly."""
    tls = haproxy.BackendTls(tmp_path / "ca.pem", tmp_path / "client.pem", "triton")
    primary, backup = config(upstream_tls=tls).servers("triton", "t0", "10.0.0.7:8001", False)
    assert "agent-check" in primary and "check-ssl" not in primary
    assert f"t0-live 10.0.0.7:8001 proto h2{tls.server_options()} check-ssl check " in backup
    text = config(upstream_tls=tls).render()
    assert text.count("default-server") == text.count(" no-check-ssl") == 2  # both backends
    assert "check-ssl" not in "".join(config().servers("triton", "t0", "10.0.0.7:8001", False))


def test_model_sync_health_and_metrics_are_served_only_when_asked_for(tmp_path):
    assert "prometheus-exporter" not in config().render()
    assert "backend health" not in config().render()  # health goes on to Triton
    text = config(
        model_sync="127.0.0.1:9200", metrics="0.0.0.0:9300", health="127.0.0.1:9201"
    ).render()
    (tmp_path / "haproxy.cfg").write_text(text)
    check_config(tmp_path / "haproxy.cfg")
    assert "use_backend model_sync if { path_beg /edgecascade.v1.ModelSync/ }" in text
    assert "server sync 127.0.0.1:9200 proto h2" in text
    assert "use_backend health if { path_beg /grpc.health.v1.Health/ }" in text
    assert "backend health\n    server health 127.0.0.1:9201 proto h2" in text
    assert "bind 0.0.0.0:9300\n    http-request use-service prometheus-exporter" in text


def test_a_bad_config_is_refused_with_haproxys_words(tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(config().render().replace("balance leastconn", "balance nonsense", 1))
    with pytest.raises(ValueError, match="balance only supports"):
        check_config(path)
    with pytest.raises(ValueError, match="at least one Triton"):
        GatewayConfig([], "127.0.0.1:9000", 9100).render()


async def ask(port: int, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.integration  # a loopback KServe server
def test_the_agent_answers_with_each_endpoints_readiness():
    async def main() -> None:
        ready = {"now": True}

        async def server_ready(request: bytes, context) -> bytes:
            return service_pb2.ServerReadyResponse(ready=ready["now"]).SerializeToString()

        kserve, url = await start_kserve({"ServerReady": server_ready})
        agent = HealthAgent([url, "127.0.0.1:1"], timeout_s=0.5)
        server = await asyncio.start_server(agent.answer, "127.0.0.1", 0)
        agent_port = server.sockets[0].getsockname()[1]
        try:
            assert await ask(agent_port, b"triton0\n") == b"up\n"
            assert await ask(agent_port, b"triton1\n") == b"down\n"  # nothing listens there
            ready["now"] = False  # live, but not ready (a model still loading)
            assert await ask(agent_port, b"triton0\n") == b"down\n"
            assert await ask(agent_port, b"triton7\n") == b""  # not ours: no answer
        finally:
            server.close()
            await agent.close()
            await kserve.stop(None)

    asyncio.run(main())


def test_without_haproxy_the_error_says_how_to_install_it(monkeypatch):

    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(haproxy, "SBIN", ())
    with pytest.raises(RuntimeError, match="apt-get install haproxy"):
        haproxy.haproxy_binary()
