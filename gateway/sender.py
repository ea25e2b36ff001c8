"""Send a job's DICOM outputs to a destination: C-STORE over one association, or DICOMweb STOW-RS.

Each function returns, per file, None (stored) or the reason it was not; the caller records which
outputs reached which destination, so a restart sends only what is missing.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from gateway.config import Destination

logger = logging.getLogger(__name__)

SUCCESS_OR_WARNING = frozenset({0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})


def requested_contexts(datasets: Iterable[Dataset]) -> dict[str, list[str]]:
    """Per SOP class, the transfer syntaxes to propose: each data set's own first, then explicit and implicit VR little endian."""
    contexts: dict[str, list[str]] = {}
    for ds in datasets:
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), [])
        for syntax in (str(ds.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if syntax not in syntaxes:
                syntaxes.append(syntax)
    return contexts


def cstore_files(files: Sequence[Path], destination: Destination, calling_ae_title: str) -> dict[Path, str | None]:
    """C-STORE every file over one association (each file's own transfer syntax proposed first)."""
    datasets = {path: dcmread(path) for path in files}
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
    for sop_class, syntaxes in requested_contexts(datasets.values()).items():
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        where = f"{destination.ae_title}@{destination.host}:{destination.port}"
        reason = f"association rejected by {where}" if assoc.is_rejected else f"no association with {where} (refused, aborted or timed out)"
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


def stow_files(files: Sequence[Path], destination: Destination) -> dict[Path, str | None]:
    """POST the files to ``<url>/studies`` in one STOW-RS request; HTTP 200 means every one was stored."""
    boundary = f"gateway-{uuid.uuid4().hex}"
    request = urllib.request.Request(
        f"{destination.url}/studies",
        data=stow_body(files, boundary),
        method="POST",
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', "Accept": "application/dicom+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=destination.timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        return dict.fromkeys(files, f"STOW-RS HTTP {error.code} {error.reason}")
    except (urllib.error.URLError, OSError) as error:
        return dict.fromkeys(files, f"STOW-RS to {destination.url}: {getattr(error, 'reason', error)}")
    return dict.fromkeys(files, None if status == 200 else f"STOW-RS HTTP {status} (some instances not stored)")


def send_files(files: Sequence[Path], destination: Destination, calling_ae_title: str) -> dict[Path, str | None]:
    if not files:
        return {}
    if destination.type == "dicomweb":
        return stow_files(files, destination)
    return cstore_files(files, destination, calling_ae_title)
