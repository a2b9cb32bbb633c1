"""The gateway's access log: HAProxy accepts it in both formats, and each line has the trace
id of the request's traceparent (run through HAProxy in tests/integration/test_traces.py)."""

import pytest

from edgecascade.router.gateway.haproxy import GatewayConfig, check_config


def config(**kw) -> GatewayConfig:
    return GatewayConfig(
        upstreams=["127.0.0.1:8001"], listen="127.0.0.1:9001", agent_port=9002, **kw
    )


@pytest.mark.parametrize("log_format", ["default", "json"])
def test_haproxy_accepts_the_access_log(tmp_path, log_format: str):
    text = config(access_log=True, log_format=log_format).render()
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    check_config(path)
    assert "log stdout format raw" in text and "req.hdr(traceparent)" in text
    assert "trace_id" in text and "field(2,-)" in text


def test_the_trace_context_is_read_before_any_answer_of_haproxys_own():
    lines = config(access_log=True, log_format="json").render().splitlines()
    read = lines.index("    http-request set-var(txn.traceparent) req.hdr(traceparent)")
    first_answer = next(i for i, line in enumerate(lines) if "http-request return" in line)
    assert read < first_answer


def test_without_access_log_haproxy_logs_nothing():
    text = config().render()
    assert "log stdout" not in text and "log-format" not in text and "traceparent" not in text
