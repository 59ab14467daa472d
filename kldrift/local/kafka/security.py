"""The client listener's security: SASL/PLAIN or TLS settings, the broker's secret, and a local
CA and key stores made with keytool."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kldrift.local.kafka.install import LocalKafkaError

SECURITY_MODES = ("plaintext", "sasl_plaintext", "ssl")
"""How the broker's client listener is secured: none, SASL/PLAIN (user `kldrift`), or TLS."""
SASL_USER = "kldrift"


def _security_properties(security: str, data_dir: Path, secret: str) -> dict[str, str]:
    """The listener settings of a security mode (secrets are in server.properties, mode 0600)."""
    if security == "plaintext":
        return {}
    if security == "sasl_plaintext":
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{SASL_USER}" password="{secret}" user_{SASL_USER}="{secret}";'
        )
        return {
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        }
    ssl_dir = data_dir / "ssl"
    return {
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(ssl_dir / "broker.p12"),
        "ssl.keystore.password": secret,
        "ssl.key.password": secret,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(ssl_dir / "truststore.p12"),
        "ssl.truststore.password": secret,
    }


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (it holds the broker's secret)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _client_settings(security: str, secret: str, data_dir: Path) -> dict[str, Any]:
    if security == "sasl_plaintext":
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": SASL_USER,
            "sasl_plain_password": secret,
        }
    if security == "ssl":
        return {"security_protocol": "SSL", "ssl_cafile": str(data_dir / "ssl" / "ca.pem")}
    return {}


def _make_certificates(java: str, ssl_dir: Path, secret: str) -> None:
    """A CA, a broker key and certificate for 127.0.0.1 signed by it (PKCS12 key and trust stores),
    and the CA as PEM for clients (ssl_cafile), made with the JDK's keytool."""
    keytool = str(Path(java).resolve().parent / "keytool")
    ssl_dir.mkdir(parents=True, exist_ok=True)
    ssl_dir.chmod(0o700)
    store = ["-storetype", "PKCS12", "-storepass", secret, "-keypass", secret, "-noprompt"]
    key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", "3650"]
    san = "SAN=ip:127.0.0.1,dns:localhost"
    ca, broker, trust = (str(ssl_dir / n) for n in ("ca.p12", "broker.p12", "truststore.p12"))
    steps = [
        [
            "-genkeypair",
            "-alias",
            "ca",
            "-dname",
            "CN=kldrift local CA",
            *key,
            "-ext",
            "bc:c",
            "-keystore",
            ca,
            *store,
        ],
        [
            "-exportcert",
            "-rfc",
            "-alias",
            "ca",
            "-keystore",
            ca,
            "-file",
            str(ssl_dir / "ca.pem"),
            *store,
        ],
        [
            "-genkeypair",
            "-alias",
            "broker",
            "-dname",
            "CN=127.0.0.1",
            *key,
            "-ext",
            san,
            "-keystore",
            broker,
            *store,
        ],
        [
            "-certreq",
            "-alias",
            "broker",
            "-keystore",
            broker,
            "-file",
            str(ssl_dir / "broker.csr"),
            *store,
        ],
        [
            "-gencert",
            "-alias",
            "ca",
            "-keystore",
            ca,
            "-infile",
            str(ssl_dir / "broker.csr"),
            "-outfile",
            str(ssl_dir / "broker.crt"),
            "-rfc",
            "-validity",
            "3650",
            "-ext",
            san,
            "-ext",
            "eku=serverAuth",
            *store,
        ],
        [
            "-importcert",
            "-alias",
            "ca",
            "-file",
            str(ssl_dir / "ca.pem"),
            "-keystore",
            broker,
            *store,
        ],
        [
            "-importcert",
            "-alias",
            "broker",
            "-file",
            str(ssl_dir / "broker.crt"),
            "-keystore",
            broker,
            *store,
        ],
        [
            "-importcert",
            "-alias",
            "ca",
            "-file",
            str(ssl_dir / "ca.pem"),
            "-keystore",
            trust,
            *store,
        ],
    ]
    for step in steps:
        done = subprocess.run(
            [keytool, "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", *step],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().replace(secret, "***")
            raise LocalKafkaError(f"keytool {step[0]} failed (exit {done.returncode}): {output}")
