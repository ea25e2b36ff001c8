"""The DICOM service: C-ECHO, and C-STORE of any storage SOP class in any transfer syntax, for listed callers only.

A C-STORE gets its success status only after the instance is on disk (atomically) and recorded in
the queue. A refused object gets a failure status and a log line; the association goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from gateway.config import GatewayConfig
from gateway.grouping import group_key
from gateway.queue import JobQueue, ReceivedInstance
from gateway.storage import atomic_write, instance_path
from gateway.validation import UNDECODABLE, storage_problem

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000


def make_ae(config: GatewayConfig) -> AE:
    ae = AE(ae_title=config.ae_title)
    ae.require_calling_aet = list(config.allowed_calling_aets)  # others: A-ASSOCIATE-RJ, calling AE title not recognised
    ae.maximum_associations = config.max_associations
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae


def store_handler(
    config: GatewayConfig, queue: JobQueue, on_stored: Callable[[ReceivedInstance], None] | None = None
) -> Callable[[Event], int]:
    def handle_store(event: Event) -> int:
        calling = event.assoc.requestor.ae_title
        affected = str(event.request.AffectedSOPInstanceUID or "")
        try:
            ds: Dataset = event.dataset
            transfer_syntax = str(event.context.transfer_syntax)
            problem = storage_problem(ds, event.encoded_dataset(include_meta=False), transfer_syntax, affected)
        except UNDECODABLE as error:
            problem = f"cannot decode the data set: {type(error).__name__}: {error}"
        if problem:
            logger.warning("Refused C-STORE from %s (SOP instance %s): %s", calling, affected or "?", problem)
            return CANNOT_UNDERSTAND if problem.startswith(("truncated", "cannot decode")) else DOES_NOT_MATCH_SOP_CLASS
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        path = instance_path(config.incoming_dir, study, series, sop)
        try:
            atomic_write(path, event.encoded_dataset(include_meta=True))
            instance = ReceivedInstance(
                sop_instance_uid=sop,
                sop_class_uid=str(ds.SOPClassUID),
                study_uid=study,
                series_uid=series,
                group_key=group_key(config.grouping, study, series),
                path=path,
                calling_aet=calling,
            )
            new = queue.record_instance(instance)
        except Exception:
            logger.exception("Could not store SOP instance %s from %s", sop, calling)
            return OUT_OF_RESOURCES
        if not new:
            logger.info("Received SOP instance %s again from %s; replaced it", sop, calling)
        if on_stored:
            on_stored(instance)
        return SUCCESS

    return handle_store


def handle_echo(event: Event) -> int:
    logger.info("C-ECHO from %s", event.assoc.requestor.ae_title)
    return SUCCESS


def rejection_logger(config: GatewayConfig) -> Callable[[Event], None]:
    def log_rejection(event: Event) -> None:
        calling = event.assoc.requestor.ae_title
        why = "allowed" if calling in config.allowed_calling_aets else "not in allowed_calling_aets"
        logger.warning(
            "Rejected association from %s:%s, calling AE title %r (%s)",
            event.assoc.requestor.address,
            event.assoc.requestor.port,
            calling,
            why if why != "allowed" else "too many associations",
        )

    return log_rejection


def start_scp(
    config: GatewayConfig, queue: JobQueue, on_stored: Callable[[ReceivedInstance], None] | None = None
) -> ThreadedAssociationServer:
    """Listen on (host, port) in background threads; returns the server (call ``shutdown()`` to stop)."""
    ae = make_ae(config)
    handlers = [
        (evt.EVT_C_STORE, store_handler(config, queue, on_stored)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_REJECTED, rejection_logger(config)),
    ]
    server = ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
    logger.info("Listening as %s on %s:%d (callers: %s)", config.ae_title, config.host, config.port, ", ".join(config.allowed_calling_aets))
    return server
