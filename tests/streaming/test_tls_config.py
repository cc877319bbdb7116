"""The embedded broker's TLS and SASL settings, as written to ``server.properties``.

Unit tests of our own configuration logic: no JVM. A broker really serving SASL_SSL
with these settings is tested in test_security.py.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streaming.errors import BrokerError
from streaming.kafka.broker import BrokerTls, LocalKafka

KEYSTORE_PASSWORD = "ks-3f9a1c"
SASL_PASSWORD = "sasl-77b0e2"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    keystore, ca = tmp_path / "broker.p12", tmp_path / "ca.pem"
    keystore.write_bytes(b"not read by these tests")
    ca.write_text("not read by these tests")
    return keystore, ca


def properties(broker: LocalKafka) -> dict[str, str]:
    path = broker._write_config(controller_port=19093)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "server.properties holds passwords"
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.mark.parametrize(("sasl", "protocol"), [(False, "SSL"), (True, "SASL_SSL")])
def test_tls_listener_settings(tmp_path, tls_files, sasl, protocol):
    keystore, ca = tls_files
    broker = LocalKafka(tmp_path / "home", port=19092,
                        tls=BrokerTls(keystore, KEYSTORE_PASSWORD, ca),
                        sasl_plain=("app", SASL_PASSWORD) if sasl else None)
    assert broker.security_protocol == protocol
    props = properties(broker)
    assert props["listeners"] == f"{protocol}://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["inter.broker.listener.name"] == protocol
    assert props["listener.security.protocol.map"] == f"CONTROLLER:PLAINTEXT,{protocol}:{protocol}"
    assert props["ssl.keystore.location"] == str(keystore.resolve())
    assert props["ssl.keystore.password"] == KEYSTORE_PASSWORD
    assert props["ssl.truststore.type"] == "PEM"
    assert props["ssl.truststore.location"] == str(ca.resolve())
    assert props["ssl.endpoint.identification.algorithm"] == "https"
    jaas = [k for k in props if k.endswith(".sasl.jaas.config")]
    assert jaas == ([f"listener.name.{protocol.lower()}.plain.sasl.jaas.config"] if sasl else [])
    client = broker.client_config()
    assert client["security_protocol"] == protocol
    assert client["ssl_cafile"] == str(ca)
    assert ("sasl_plain_password" in client) == sasl


def test_plaintext_and_sasl_plaintext_have_no_tls_settings(tmp_path):
    plain = LocalKafka(tmp_path / "a", port=19092)
    sasl = LocalKafka(tmp_path / "b", port=19092, sasl_plain=("app", SASL_PASSWORD))
    assert (plain.security_protocol, sasl.security_protocol) == ("PLAINTEXT", "SASL_PLAINTEXT")
    assert plain.client_config() == {}
    assert sasl.client_config()["security_protocol"] == "SASL_PLAINTEXT"
    for broker in (plain, sasl):
        assert not [k for k in properties(broker) if k.startswith("ssl.")]


def test_no_password_in_repr(tls_files, tmp_path):
    keystore, ca = tls_files
    tls = BrokerTls(keystore, KEYSTORE_PASSWORD, ca)
    broker = LocalKafka(tmp_path, tls=tls, sasl_plain=("app", SASL_PASSWORD))
    for text in (repr(tls), repr(broker), str(broker)):
        assert KEYSTORE_PASSWORD not in text and SASL_PASSWORD not in text, text
    assert "SASL_SSL" in repr(broker)


@pytest.mark.parametrize("password", ["", "a\\b", 'a"b', "a;b", "a\nb", " ab"])
def test_keystore_password_the_properties_file_cannot_carry_is_refused(tls_files, password):
    keystore, ca = tls_files
    with pytest.raises(BrokerError, match="keystore password"):
        BrokerTls(keystore, password, ca)


def test_missing_tls_file_is_refused(tls_files, tmp_path):
    keystore, _ = tls_files
    with pytest.raises(BrokerError, match="does not exist"):
        BrokerTls(keystore, KEYSTORE_PASSWORD, tmp_path / "no-ca.pem")
