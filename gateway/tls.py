"""DICOM TLS (PS3.15 B.1, the BCP 195 profiles): the SCP's server context and a destination's client context.

Both require TLS 1.2 or later. The server presents its certificate and, given trusted CA certificates, checks a
client's certificate: required when ``require_client_certificate`` (mutual TLS), else checked only when the client
offers one. The client checks the server's certificate against its CA certificates and its name (``server_hostname``,
by default the destination's host), and presents its own certificate when given one. Certificates and keys are PEM
files; a key must not be encrypted (the gateway runs unattended). Contexts are built from the files each time they
are needed, so a renewed certificate is taken without a restart (the SCP's at start-up, a destination's at each
association). ``ssl`` only: the configuration checks its files with these functions, without importing pynetdicom.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsFileError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file and why."""


def _reason(error: ssl.SSLError) -> object:
    """OpenSSL's reason code (e.g. KEY_VALUES_MISMATCH), or the error itself when it has none."""
    return getattr(error, "reason", None) or error


def _readable(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise TlsFileError(f"cannot read {path}: {error.strerror}") from None


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path) -> None:
    _readable(certificate)
    _readable(private_key)
    try:
        context.load_cert_chain(certificate, private_key, password=lambda: b"")
    except ssl.SSLError as error:
        raise TlsFileError(
            f"{certificate} and {private_key} are not a PEM certificate and its unencrypted private key ({_reason(error)})"
        ) from None


def _load_cas(context: ssl.SSLContext, ca_certificates: Path) -> None:
    _readable(ca_certificates)
    try:
        context.load_verify_locations(cafile=ca_certificates)
    except ssl.SSLError as error:
        raise TlsFileError(f"{ca_certificates} holds no PEM CA certificate ({_reason(error)})") from None


def server_context(
    certificate: Path, private_key: Path, ca_certificates: Path | None = None, require_client_certificate: bool = False
) -> ssl.SSLContext:
    """The SCP's context: its certificate, TLS 1.2 or later, client certificates checked against ``ca_certificates``."""
    if require_client_certificate and ca_certificates is None:
        raise TlsFileError("a client certificate cannot be required without CA certificates to check it against")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, certificate, private_key)
    if ca_certificates is not None:
        _load_cas(context, ca_certificates)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    return context


def client_context(ca_certificates: Path, certificate: Path | None = None, private_key: Path | None = None) -> ssl.SSLContext:
    """A destination's context: the server's certificate and name checked against ``ca_certificates``, TLS 1.2 or later."""
    if (certificate is None) != (private_key is None):
        raise TlsFileError("a client certificate needs its private key, and a key its certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.minimum_version = MINIMUM_VERSION
    _load_cas(context, ca_certificates)
    if certificate is not None and private_key is not None:
        _load_chain(context, certificate, private_key)
    return context


class RecordingContext:
    """Keeps the TLS errors that sockets wrapped by ``context`` meet connecting and reading: pynetdicom logs and drops
    them, and the sender names the one that made an association fail (an untrusted server certificate at connect; in
    TLS 1.3, a server's refusal of this client's certificate, or of its lack of one, at the first read)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.errors: list[OSError] = []
        errors = self.errors

        class RecordingSocket(ssl.SSLSocket):
            def connect(self, address: object) -> None:
                try:
                    super().connect(address)
                except OSError as error:
                    errors.append(error)
                    raise

            def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
                try:
                    return super().recv(buflen, flags)
                except ssl.SSLError as error:
                    errors.append(error)
                    raise

        context.sslsocket_class = RecordingSocket

    def reason(self) -> str | None:
        """Why the last TLS connection failed, in one line, or None (none failed, or not in TLS)."""
        tls_errors = [error for error in self.errors if isinstance(error, ssl.SSLError)]
        return handshake_failure(tls_errors[-1], "server") if tls_errors else None


def handshake_failure(error: OSError, peer: Literal["client", "server"]) -> str:
    """One line for a failed TLS handshake with the ``peer``."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: the {peer}'s certificate is not trusted ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({_reason(error)})"
    if isinstance(error, TimeoutError):
        return "TLS handshake timed out"
    return f"connection lost during the TLS handshake ({error.strerror or error})"
