"""DICOMweb WADO-RS retrieval of one instance (DICOM PS3.18 10.4), as a viewer such as OHIF or Slim fetches it."""

from __future__ import annotations

import email
import email.policy
import io
import urllib.request

from pydicom import dcmread
from pydicom.dataset import Dataset


def wado_rs_instance(base_url: str, study_uid: str, series_uid: str, sop_instance_uid: str, timeout_s: float = 120) -> Dataset:
    """GET ``<base_url>/studies/{study}/series/{series}/instances/{instance}`` as multipart/related
    application/dicom; the one part, read by pydicom. Raises when the server answers other than 200 with one part."""
    request = urllib.request.Request(
        f"{base_url}/studies/{study_uid}/series/{series_uid}/instances/{sop_instance_uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"'},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        content_type, body = response.headers["Content-Type"], response.read()
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP)
    parts = [part for part in message.iter_parts() if part.get_content_type() == "application/dicom"]
    if len(parts) != 1:
        raise ValueError(f"WADO-RS answered {len(parts)} application/dicom parts for instance {sop_instance_uid}, expected 1")
    return dcmread(io.BytesIO(parts[0].get_payload(decode=True)))
