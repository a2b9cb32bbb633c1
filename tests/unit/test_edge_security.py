"""The agent's security from its settings: tokens read from files, client transports, trusted
keys, which hops are insecure; every mistake a UserError naming the file, never a secret."""

import pytest

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.errors import UserError
from edgecascade.edge.serving.security import (
    SecurityError,
    client_transport,
    insecure_hops,
    read_token,
    trusted_keys,
)
from edgecascade.edge.serving.settings import EdgeSettings


def test_a_token_file_is_read_and_sent_as_a_bearer_token(tmp_path):
    token = tmp_path / "token"
    token.write_text("abcdefghijklmnopqrstuvwxyz012345\n")
    transport = client_transport(insecure=True, token_file=token)
    assert transport.headers == {"authorization": "Bearer abcdefghijklmnopqrstuvwxyz012345"}
    assert transport.tls is None


def test_a_bad_token_file_is_named_but_its_content_never_shown(tmp_path):
    with pytest.raises(SecurityError, match="cannot be read"):
        read_token(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("not a token: secret-ish words\n")
    with pytest.raises(SecurityError) as caught:
        read_token(bad)
    assert str(bad) in str(caught.value) and "secret-ish" not in str(caught.value)


def test_client_tls_mistakes(tmp_path):
    with pytest.raises(SecurityError, match="--insecure calls in plaintext"):
        client_transport(insecure=True, ca=tmp_path / "ca.pem")
    with pytest.raises(UserError, match="certificate and its key together"):
        client_transport(cert=tmp_path / "c.pem")
    assert client_transport().tls is not None  # TLS by default, the system's roots


def test_trusted_keys_are_found_or_the_agent_is_told_what_to_give(tmp_path):
    settings = EdgeSettings(insecure=True, artifacts=tmp_path)
    with pytest.raises(SecurityError) as caught:
        trusted_keys(settings)
    assert f"no trusted manifest signing key in {tmp_path / 'keys'}" in str(caught.value)
    assert "--trusted-keys" in str(caught.value) and "--allow-unsigned" in str(caught.value)
    signing.generate_key(tmp_path / "keys", "old")
    _, new = signing.generate_key(tmp_path / "elsewhere", "new")
    assert len(trusted_keys(settings)) == 1
    both = EdgeSettings(insecure=True, trusted_keys=[tmp_path / "keys", new])
    assert len(trusted_keys(both)) == 2  # a rotation: both trusted
    assert trusted_keys(EdgeSettings(insecure=True, allow_unsigned=True)) is None


def test_insecure_hops():
    assert insecure_hops(EdgeSettings(insecure=True)) == ["agent"]
    cloud = {"cloud_url": "triton:8001", "cloud_insecure": True}
    assert insecure_hops(EdgeSettings(insecure=True, **cloud)) == ["agent", "cloud"]
    assert insecure_hops(EdgeSettings(insecure=True, cloud_insecure=True)) == ["agent"]
