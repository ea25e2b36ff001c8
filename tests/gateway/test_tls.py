"""DICOM TLS: the configuration and its errors, the SCP over TLS (mutual TLS, the AE allow-list, refused handshakes that
hold up no one), and a real Orthanc sending to the gateway and receiving its results over TLS in both directions."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from gateway.config import ClientTls, ConfigError, ServerTls, load_config
from gateway.tls import MINIMUM_VERSION, handshake_failure, server_context
from testkit.certificates import CertificateAuthority, Issued, make_ca
from testkit.gateway_process import REPO_ROOT, GatewayProcess, echo, store, write_config
from testkit.gateway_samples import ct_series, write_series
from testkit.orthanc import Orthanc, dicom_tls_settings, free_port, missing_orthanc, start_orthanc
from tests.gateway.fake_seg_app import fake_route

ROUTES = [{"name": "none", "match": {"Modality": "NOTHING"}, "command": ["true"]}]


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    gateway: Issued
    orthanc: Issued
    scu: Issued
    rogue: CertificateAuthority  # a CA nobody trusts
    stranger: Issued  # signed by the rogue CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca(folder, "hospital-ca"), make_ca(folder / "rogue", "rogue-ca")
    issued = {name: ca.issue(name, folder) for name in ("gateway", "orthanc", "scu")}
    return Pki(ca, issued["gateway"], issued["orthanc"], issued["scu"], rogue, rogue.issue("stranger", folder / "rogue"))


def tls_section(pki: Pki, **overrides: object) -> dict:
    return {
        "certificate": str(pki.gateway.certificate),
        "private_key": str(pki.gateway.private_key),
        "ca_certificates": str(pki.ca.path),
        "require_client_certificate": True,
        **overrides,
    }


def client(pki: Pki, issued: Issued | None = None, trust: Path | None = None, maximum: ssl.TLSVersion | None = None) -> tuple:
    """pynetdicom's tls_args for a client trusting ``trust`` (the hospital CA), presenting ``issued`` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=trust or pki.ca.path)
    if issued is not None:
        context.load_cert_chain(issued.certificate, issued.private_key)
    if maximum is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version, context.maximum_version = ssl.TLSVersion.TLSv1, maximum
    return context, "127.0.0.1"


# --- configuration -----------------------------------------------------------------------------


def written_config(tmp_path: Path, tls: dict | None, destinations: list[dict] | None = None, port: int = 11112) -> Path:
    return write_config(tmp_path, port, ROUTES, destinations, **({"tls": tls} if tls is not None else {}))


def test_the_tls_section_and_a_tls_destination_are_read(tmp_path: Path, pki: Pki):
    pacs = {"name": "pacs", "type": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": 2762, "tls": True}
    other = {**pacs, "name": "other", "tls": {"ca_certificates": str(pki.rogue.path), "server_hostname": "pacs.example"}}
    config = load_config(written_config(tmp_path, tls_section(pki, plain_port=11113), [pacs, other]))
    assert config.tls == ServerTls(pki.gateway.certificate, pki.gateway.private_key, pki.ca.path, True, 11113)
    assert config.destinations[0].tls == ClientTls(pki.ca.path, pki.gateway.certificate, pki.gateway.private_key)
    assert config.destinations[1].tls == ClientTls(pki.rogue.path, server_hostname="pacs.example")


PACS = {"name": "pacs", "type": "dicom", "ae_title": "PACS", "host": "127.0.0.1", "port": 2762}


def without(section: dict, key: str) -> dict:
    return {k: v for k, v in section.items() if k != key}


UNUSABLE = {  # case -> (the tls section, a destination)
    "missing-certificate": lambda pki, tmp: (tls_section(pki, certificate=str(tmp / "missing.crt")), None),
    "key-is-a-folder": lambda pki, tmp: (tls_section(pki, private_key=str(tmp)), None),
    "key-of-another-certificate": lambda pki, tmp: (tls_section(pki, private_key=str(pki.orthanc.private_key)), None),
    "no-private-key": lambda pki, tmp: (without(tls_section(pki), "private_key"), None),
    "required-without-ca": lambda pki, tmp: (without(tls_section(pki), "ca_certificates"), None),
    "plain-port-is-the-tls-port": lambda pki, tmp: (tls_section(pki, plain_port=11112), None),
    "destination-true-without-ca": lambda pki, tmp: (None, {**PACS, "tls": True}),
    "destination-ca-not-a-certificate": lambda pki, tmp: (
        tls_section(pki),
        {**PACS, "tls": {"ca_certificates": str(pki.gateway.private_key)}},
    ),
    "dicomweb-destination": lambda pki, tmp: (
        None,
        {"name": "web", "type": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web", "tls": True},
    ),
    "not-a-mapping": lambda pki, tmp: ("on", None),
    "destination-certificate-without-key": lambda pki, tmp: (
        tls_section(pki),
        {**PACS, "tls": {"ca_certificates": str(pki.ca.path), "certificate": str(pki.gateway.certificate)}},
    ),
}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-certificate", "tls: cannot read {tmp}/missing.crt: No such file or directory"),
        ("key-is-a-folder", "tls: cannot read {tmp}: Is a directory"),
        ("key-of-another-certificate", "tls: {gateway_crt} and {orthanc_key} are not a PEM certificate and its unencrypted private key"),
        ("no-private-key", "tls: missing 'private_key'"),
        ("required-without-ca", "tls: a client certificate cannot be required without CA certificates to check it against"),
        ("plain-port-is-the-tls-port", "tls.plain_port: must differ from port (11112), which takes TLS"),
        ("destination-true-without-ca", "destinations[0].tls: true takes the tls section's ca_certificates, and there are none"),
        ("destination-ca-not-a-certificate", "destinations[0].tls: {gateway_key} holds no PEM CA certificate"),
        ("dicomweb-destination", "destinations[0] (web).tls: DICOM TLS is for type dicom"),
        ("not-a-mapping", "tls: expected a mapping with certificate and private_key"),
        ("destination-certificate-without-key", "destinations[0].tls: a client certificate needs its private key"),
    ],
)
def test_an_unusable_tls_setting_is_a_config_error_naming_it(tmp_path: Path, pki: Pki, case: str, expected: str):
    tls, destination = UNUSABLE[case](pki, tmp_path)
    path = written_config(tmp_path, tls, [destination] if destination else None)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = expected.format(
        tmp=tmp_path, gateway_crt=pki.gateway.certificate, gateway_key=pki.gateway.private_key, orthanc_key=pki.orthanc.private_key
    )
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("with_ca", "required", "verify_mode"),
    [(True, True, ssl.CERT_REQUIRED), (True, False, ssl.CERT_OPTIONAL), (False, False, ssl.CERT_NONE)],
)
def test_the_server_context_takes_tls_1_2_or_later_and_checks_client_certificates_as_configured(pki: Pki, with_ca, required, verify_mode):
    context = server_context(pki.gateway.certificate, pki.gateway.private_key, pki.ca.path if with_ca else None, required)
    assert MINIMUM_VERSION == ssl.TLSVersion.TLSv1_2
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2 and context.verify_mode == verify_mode


@pytest.mark.parametrize(
    ("error", "peer", "line"),
    [
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "client", "TLS handshake failed ("),
        (TimeoutError(), "client", "TLS handshake timed out"),
        (
            ConnectionResetError(104, "Connection reset by peer"),
            "client",
            "connection lost during the TLS handshake (Connection reset by peer)",
        ),
    ],
)
def test_a_failed_handshake_is_one_line(error: OSError, peer, line: str):
    assert handshake_failure(error, peer).startswith(line)


def test_serve_with_a_missing_key_stops_with_one_line_and_exit_2(tmp_path: Path, pki: Pki):
    path = written_config(tmp_path, tls_section(pki, private_key=str(tmp_path / "gone.key")))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr == f"gateway: error: tls: cannot read {tmp_path / 'gone.key'}: No such file or directory\n"


# --- the SCP over TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_gateway(tmp_path_factory: pytest.TempPathFactory, pki: Pki):
    folder = tmp_path_factory.mktemp("tls-gateway")
    port = free_port()
    gateway = GatewayProcess(
        write_config(folder, port, ROUTES, tls=tls_section(pki)), port, folder / "gateway.log", tls_args=client(pki, pki.scu)
    ).start()
    yield gateway
    assert gateway.terminate() == 0


def wait_for_log(gateway: GatewayProcess, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in gateway.log_text():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{gateway.log_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_client_with_a_trusted_certificate_stores_over_tls(tls_gateway: GatewayProcess, pki: Pki):
    series = ct_series(2)
    assert store(tls_gateway.port, series, tls_args=client(pki, pki.scu)) == [0, 0]
    wait_for_log(tls_gateway, "(TLSv1.3, client certificate CN=scu)")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # the old client is the point
@pytest.mark.parametrize(
    ("who", "logged"),
    [
        ("no-certificate", "TLS handshake failed (PEER_DID_NOT_RETURN_A_CERTIFICATE)"),
        ("untrusted-certificate", "TLS: the client's certificate is not trusted (unable to get local issuer certificate)"),
        ("tls-1.1", "TLS handshake failed (UNSUPPORTED_PROTOCOL)"),
    ],
)
def test_a_client_mutual_tls_does_not_accept_is_refused_and_the_service_goes_on(tls_gateway: GatewayProcess, pki: Pki, who, logged):
    tls_args = {
        "no-certificate": client(pki),
        "untrusted-certificate": client(pki, pki.stranger),
        "tls-1.1": client(pki, pki.scu, maximum=ssl.TLSVersion.TLSv1_1),
    }[who]
    assert echo(tls_gateway.port, tls_args=tls_args) is None
    wait_for_log(tls_gateway, logged)
    assert echo(tls_gateway.port, tls_args=client(pki, pki.scu)) == 0


@pytest.mark.slow
def test_the_ae_allow_list_still_applies_over_tls(tls_gateway: GatewayProcess, pki: Pki):
    assert echo(tls_gateway.port, calling_aet="STRANGER", tls_args=client(pki, pki.scu)) is None
    wait_for_log(tls_gateway, "calling AE title 'STRANGER' (not in allowed_calling_aets)")


@pytest.mark.slow
def test_the_tls_port_takes_no_plain_dicom_and_a_silent_connection_holds_up_no_one(tls_gateway: GatewayProcess, pki: Pki):
    assert echo(tls_gateway.port) is None  # plain DICOM on the TLS port: refused at the handshake
    wait_for_log(tls_gateway, "TLS handshake failed (")
    with socket.create_connection(("127.0.0.1", tls_gateway.port)) as silent:  # connects, never speaks
        started = time.monotonic()
        assert echo(tls_gateway.port, tls_args=client(pki, pki.scu)) == 0
        assert time.monotonic() - started < 20 and silent.fileno() != -1


@pytest.mark.slow
def test_a_plain_port_listens_only_when_configured(tmp_path: Path, pki: Pki):
    port, plain = free_port(), free_port()
    config = write_config(tmp_path, port, ROUTES, tls=tls_section(pki, plain_port=plain))
    gateway = GatewayProcess(config, port, tmp_path / "gateway.log", tls_args=client(pki, pki.scu)).start()
    try:
        assert echo(plain) == 0 and echo(port) is None
        assert f"DICOM TLS on port {port} (client certificate required); without TLS on port {plain}" in gateway.log_text()
    finally:
        assert gateway.terminate() == 0


# --- a real Orthanc, over TLS in both directions -----------------------------------------------


def tls_orthanc(folder: Path, pki: Pki) -> Orthanc:
    problem = missing_orthanc()
    if problem:
        pytest.skip(problem)
    return start_orthanc(folder, settings=dicom_tls_settings(pki.orthanc.certificate, pki.orthanc.private_key, pki.ca.path))


def orthanc_destination(orthanc: Orthanc, tls: object) -> dict:
    return {"name": "pacs", "type": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port, "tls": tls}


@pytest.mark.slow
def test_orthanc_sends_over_tls_and_gets_the_seg_back_over_tls(tmp_path: Path, pki: Pki):
    orthanc = tls_orthanc(tmp_path / "orthanc", pki)
    try:
        port = free_port()
        config = write_config(tmp_path, port, [fake_route(tmp_path)], [orthanc_destination(orthanc, True)], tls=tls_section(pki))
        gateway = GatewayProcess(config, port, tmp_path / "gateway.log", tls_args=client(pki, pki.scu)).start()
        try:
            orthanc.add_modality("gateway", "GATEWAY", port, use_tls=True)
            uploaded = orthanc.upload(write_series(ct_series(3), tmp_path / "ct"))
            orthanc.store_to("gateway", [uploaded[0]["ParentSeries"]])  # Orthanc's C-STORE, over DICOM TLS
            [job] = gateway.wait_for_jobs({"done", "failed"})
        finally:
            assert gateway.terminate() == 0
        assert job["state"] == "done", gateway.log_text()[-3000:]
        assert "client certificate CN=orthanc" in gateway.log_text()
        [output] = job["outputs"]
        [instance] = orthanc.find("Instance", {"SOPInstanceUID": output["sop_instance_uid"]})
        assert dcmread(io.BytesIO(orthanc.instance_file(instance))).Modality == "SEG"
    finally:
        orthanc.stop()


def job_error(gateway: GatewayProcess, text: str, timeout_s: float = 120) -> dict:
    """Poll ``gateway jobs`` until a job's error holds ``text``; that job."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for job in gateway.jobs():
            if text in (job["error"] or ""):
                return job
        time.sleep(0.5)
    raise AssertionError(f"no job error with {text!r}: {gateway.jobs()}\n{gateway.log_text()[-3000:]}")


@pytest.mark.slow
def test_an_untrusted_pacs_certificate_fails_the_export_by_name_and_the_job_is_sent_once_it_is_trusted(tmp_path: Path, pki: Pki):
    orthanc = tls_orthanc(tmp_path / "orthanc", pki)
    trusted = tmp_path / "pacs-ca.crt"
    trusted.write_bytes(pki.rogue.path.read_bytes())  # the wrong CA: Orthanc's certificate does not chain to it
    try:
        port = free_port()
        tls = {"ca_certificates": str(trusted), "certificate": str(pki.gateway.certificate), "private_key": str(pki.gateway.private_key)}
        config = write_config(tmp_path, port, [fake_route(tmp_path)], [orthanc_destination(orthanc, tls)], max_send_attempts=1000)
        gateway = GatewayProcess(config, port, tmp_path / "gateway.log").start()
        try:
            assert store(port, ct_series(3)) == [0, 0, 0]
            job = job_error(gateway, "TLS: the server's certificate is not trusted")
            assert job["state"] == "sending"  # retryable: the next sending round tries again
            assert (
                f"no association with ORTHANC@127.0.0.1:{orthanc.dicom_port}: TLS: the server's certificate is not trusted" in job["error"]
            )
            trusted.write_bytes(pki.ca.path.read_bytes())  # read at each association: no restart
            [job] = gateway.wait_for_jobs({"done", "failed"})
        finally:
            assert gateway.terminate() == 0
        assert job["state"] == "done"
        assert len(orthanc.find("Instance", {"SOPInstanceUID": job["outputs"][0]["sop_instance_uid"]})) == 1
    finally:
        orthanc.stop()


@pytest.mark.slow
def test_a_pacs_that_requires_a_client_certificate_refuses_an_export_without_one_by_name(tmp_path: Path, pki: Pki):
    orthanc = tls_orthanc(tmp_path / "orthanc", pki)  # DicomTlsRemoteCertificateRequired
    try:
        port = free_port()
        destination = orthanc_destination(orthanc, {"ca_certificates": str(pki.ca.path)})  # trusts Orthanc, presents nothing
        config = write_config(tmp_path, port, [fake_route(tmp_path)], [destination], max_send_attempts=1)
        gateway = GatewayProcess(config, port, tmp_path / "gateway.log").start()
        try:
            assert store(port, ct_series(3)) == [0, 0, 0]
            [job] = gateway.wait_for_jobs({"done", "failed"})
        finally:
            assert gateway.terminate() == 0
        assert job["state"] == "failed"
        assert (
            f"no association with ORTHANC@127.0.0.1:{orthanc.dicom_port}: TLS handshake failed (TLSV13_ALERT_CERTIFICATE_REQUIRED)"
            in job["error"]
        )
        assert orthanc.find("Instance", {"SOPInstanceUID": job["outputs"][0]["sop_instance_uid"]}) == []
    finally:
        orthanc.stop()
