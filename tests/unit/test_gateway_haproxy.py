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
    return GatewayConfig(
        upstreams=["127.0.0.1:8001", "triton-1.cluster:8001"],
        listen="127.0.0.1:9000",
        agent_port=9100,
        **kw,
    )


def test_every_endpoint_is_checked_by_haproxy_and_by_the_agent(tmp_path):
    text = config(check_interval_s=0.2).render()
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    check_config(path)  # haproxy -c accepts it
    assert "bind 127.0.0.1:9000 proto h2" in text
    for name, url in (("triton0", "127.0.0.1:8001"), ("triton1", "triton-1.cluster:8001")):
        assert (
            f"server {name} {url} proto h2 check inter 200ms fall 1 rise 1 agent-check "
            f'agent-addr 127.0.0.1 agent-port 9100 agent-inter 200ms agent-send "{name}\\n"'
        ) in text
        assert f"server {name}-live {url} proto h2 check inter 200ms fall 1 rise 1 backup" in text
        assert f"server {name} {url} proto h2 track triton/{name}" in text  # streams
        assert f"server {name}-live {url} proto h2 backup track triton/{name}-live" in text
    assert text.count("option allbackups") == 2  # none ready: every live one, not just one
    assert "retries 2" in text and "retry-on conn-failure empty-response" in text
    assert "model_sync" not in text


def test_model_sync_and_metrics_are_served_only_when_asked_for(tmp_path):
    assert "prometheus-exporter" not in config().render()
    text = config(model_sync="127.0.0.1:9200", metrics="0.0.0.0:9300").render()
    (tmp_path / "haproxy.cfg").write_text(text)
    check_config(tmp_path / "haproxy.cfg")
    assert "use_backend model_sync if { path_beg /edgecascade.v1.ModelSync/ }" in text
    assert "server sync 127.0.0.1:9200 proto h2" in text
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
