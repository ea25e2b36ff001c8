"""Send a job's DICOM outputs to a destination: C-STORE over one association, or DICOMweb STOW-RS.

Each function returns, per file, None (stored) or the reason it was not; the caller records which
outputs reached which destination, so the next sending round (and a restart) sends only what is
missing: after a STOW-RS that stored some instances, only the failed ones are sent again.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, Association

from gateway.config import Destination
from gateway.tls import RecordingContext, TlsFileError, client_context

logger = logging.getLogger(__name__)

SUCCESS_OR_WARNING = frozenset({0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})


def keep_responses(assoc: Association) -> Association:
    """Make an established requestor association keep every response for the ``send_*`` call that waits for it.

    pynetdicom 3.0.4's reactor thread pauses for a ``send_*`` call by a handshake with a window (between its
    ``_reactor_checkpoint.wait()`` returning and ``_is_paused = False``): a ``send_*`` call that looks then goes on
    while the reactor still reads the DIMSE queue, the reactor takes the response, logs "Received unexpected C-STORE
    service message" and drops it, and the sender waits out its DIMSE timeout and aborts the association
    (``python -m benchmarks.dimse_race`` measures it). The reactor of a storage SCU has no requests to serve, so a
    response it takes is put back on the queue, where the waiting ``send_*`` call finds it; requests are served as
    before."""
    serve = assoc._serve_request

    def serve_or_return(msg, context_id: int) -> None:
        if msg.is_valid_response:
            logger.debug("A %s response the association's reactor took is put back for its sender", msg.msg_type)
            assoc.dimse.msg_queue.put((context_id, msg))
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_return
    return assoc


class SenderAE(AE):
    """A pynetdicom AE whose established associations keep their responses (``keep_responses``): the AE every
    C-STORE and C-ECHO sender here uses."""

    def associate(self, *args, **kwargs) -> Association:
        assoc = super().associate(*args, **kwargs)
        return keep_responses(assoc) if assoc.is_established else assoc


def requested_contexts(datasets: Iterable[Dataset]) -> dict[str, list[str]]:
    """Per SOP class, the transfer syntaxes to propose: each data set's own first, then explicit and implicit VR little endian."""
    contexts: dict[str, list[str]] = {}
    for ds in datasets:
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), [])
        for syntax in (str(ds.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    return contexts


@dataclass(frozen=True)
class TlsConnection:
    recorded: RecordingContext  # its context, and the TLS errors it met
    server_hostname: str


def tls_connection(destination: Destination) -> TlsConnection | None:
    """The client context of a DICOM TLS destination (its files read now: a renewed certificate needs no restart)."""
    if destination.tls is None:
        return None
    tls = destination.tls
    recorded = RecordingContext(client_context(tls.ca_certificates, tls.certificate, tls.private_key))
    return TlsConnection(recorded, tls.server_hostname or destination.host)


def cstore_files(files: Sequence[Path], destination: Destination, calling_ae_title: str) -> dict[Path, str | None]:
    """C-STORE every file over one association (each file's own transfer syntax proposed first)."""
    datasets = {path: dcmread(path) for path in files}
    ae = SenderAE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
    for sop_class, syntaxes in requested_contexts(datasets.values()).items():
        ae.add_requested_context(sop_class, syntaxes)
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    try:
        tls = tls_connection(destination)
    except TlsFileError as error:
        return dict.fromkeys(files, f"no association with {where}: {error}")
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        tls_args=(tls.recorded.context, tls.server_hostname) if tls else None,
    )
    if not assoc.is_established:
        reason = f"association rejected by {where}" if assoc.is_rejected else f"no association with {where} (refused, aborted or timed out)"
        if tls is not None and (tls_reason := tls.recorded.reason()):
            reason = f"no association with {where}: {tls_reason}"
        return dict.fromkeys(files, reason)
    results: dict[Path, str | None] = {}
    try:
        for path, ds in datasets.items():
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as error:
                results[path] = f"not sent: {error}"
                continue
            code = getattr(status, "Status", None)
            results[path] = None if code in SUCCESS_OR_WARNING else ("no response" if code is None else f"status 0x{code:04X}")
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    for path in files:
        results.setdefault(path, "association ended before it was sent")
    return results


def stow_body(files: Sequence[Path], boundary: str) -> bytes:
    """A multipart/related; type="application/dicom" body holding the files (DICOM Part 18, STOW-RS)."""
    parts = []
    for path in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + Path(path).read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


# FailureReason (0008,1197) values of a STOW-RS response (PS3.18 10.5.3, the C-STORE statuses of PS3.4 B.2.3)
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}


def _response_dataset(body: bytes) -> Dataset | None:
    """The STOW-RS response body (application/dicom+json) as a data set, or None when there is none or it is not one."""
    if not body.strip():
        return None
    try:
        return Dataset.from_json(json.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _failure_reasons(response: Dataset) -> dict[str, str]:
    """SOP Instance UID -> why, from FailedSOPSequence (0008,1198)."""
    reasons = {}
    for item in response.get("FailedSOPSequence") or []:
        code = item.get("FailureReason")
        why = "no FailureReason given" if code is None else f"failure reason 0x{code:04X} ({FAILURE_REASONS.get(code, 'failure')})"
        reasons[str(item.get("ReferencedSOPInstanceUID", ""))] = why
    return reasons


def stow_outcome(status: int, phrase: str, body: bytes, sop_uids: Mapping[Path, str]) -> dict[Path, str | None]:
    """Per file (with its SOP Instance UID), None when the STOW-RS response says it was stored, else why not (PS3.18 10.5.3).

    200 and 202: stored are the instances in ReferencedSOPSequence (0008,1199), failed those in FailedSOPSequence
    (0008,1198) with their FailureReason; one in neither was not stored (Orthanc's DICOMweb plugin 1.7 answers 200 and
    leaves out an instance it failed to store, and every later one). A 200 without a ReferencedSOPSequence (a server that
    lists nothing) stores all. 409 and every other status: none stored, with the failure reasons when the body gives them.
    """
    response = _response_dataset(body)
    reasons = _failure_reasons(response) if response is not None else {}
    where = f"STOW-RS HTTP {status}" + (f" {phrase}" if phrase and status not in (200, 202) else "")
    if status not in (200, 202):
        return {path: f"{where}: {reasons.get(uid, 'not stored')}" for path, uid in sop_uids.items()}
    if response is None:
        return dict.fromkeys(sop_uids, None if status == 200 else f"{where}: the response lists no stored instances")
    listed = response.get("ReferencedSOPSequence")
    if listed is None and status == 200:
        stored = set(sop_uids.values())
    else:
        stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in listed or []}

    def outcome(uid: str) -> str | None:
        if uid in reasons:
            return f"{where}: {reasons[uid]}"
        return None if uid in stored else f"{where}: not in the response's ReferencedSOPSequence (not stored)"

    return {path: outcome(uid) for path, uid in sop_uids.items()}


def _stow(files: Sequence[Path], destination: Destination) -> tuple[int | None, dict[Path, str | None]]:
    """One STOW-RS request of ``files``: the HTTP status (None when there was no answer) and the outcome per file."""
    sop_uids = {path: str(dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID) for path in files}
    boundary = f"gateway-{uuid.uuid4().hex}"
    request = urllib.request.Request(
        f"{destination.url}/studies",
        data=stow_body(files, boundary),
        method="POST",
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', "Accept": "application/dicom+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=destination.timeout_s) as response:
            status, phrase, body = response.status, response.reason, response.read()
    except urllib.error.HTTPError as error:
        status, phrase, body = error.code, str(error.reason), error.read()
    except (urllib.error.URLError, OSError) as error:
        return None, dict.fromkeys(files, f"STOW-RS to {destination.url}: {getattr(error, 'reason', error)}")
    return status, stow_outcome(status, phrase, body, sop_uids)


def stow_files(files: Sequence[Path], destination: Destination) -> dict[Path, str | None]:
    """POST the files to ``<url>/studies`` in one STOW-RS request; which were stored, by the response (``stow_outcome``).

    When a 200 or 202 leaves some of several instances unstored, each of those is sent once more in a request of its own:
    Orthanc's DICOMweb plugin drops every part after one it fails to store, so a request of one keeps an instance that
    keeps failing from holding back the others. What still fails is left to the next sending round.
    """
    status, results = _stow(files, destination)
    unstored = [path for path, error in results.items() if error is not None]
    if status in (200, 202) and len(files) > 1 and unstored:
        logger.warning(
            "STOW-RS to %s: HTTP %d, %d of %d instances not stored; each sent again alone",
            destination.url,
            status,
            len(unstored),
            len(files),
        )
        for path in unstored:
            results[path] = _stow([path], destination)[1][path]
    return results


def send_files(files: Sequence[Path], destination: Destination, calling_ae_title: str) -> dict[Path, str | None]:
    if not files:
        return {}
    if destination.type == "dicomweb":
        return stow_files(files, destination)
    return cstore_files(files, destination, calling_ae_title)
