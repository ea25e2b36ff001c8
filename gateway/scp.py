"""The DICOM service: C-ECHO, and C-STORE of any storage SOP class in any transfer syntax, for listed callers only.

A C-STORE gets its success status only after the instance is on disk (atomically) and recorded in
the queue, with its file's SHA-256 and its association. Each association is recorded when it is
established and when it is released or aborted (``gateway.reception``). A refused object gets a
failure status and a log line; the association goes on.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from gateway.config import GatewayConfig
from gateway.grouping import group_key
from gateway.queue import JobQueue
from gateway.reception import AssociationState, ReceivedInstance
from gateway.storage import atomic_write, instance_path, remove_empty_dirs, write_failure
from gateway.tls import handshake_failure, server_context
from gateway.validation import UNDECODABLE, Refusal, storage_refusal, undecodable_refusal

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700


def make_ae(config: GatewayConfig) -> AE:
    ae = AE(ae_title=config.ae_title)
    ae.require_calling_aet = list(config.allowed_calling_aets)  # others: A-ASSOCIATE-RJ, calling AE title not recognised
    ae.maximum_associations = config.max_associations
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae


class AssociationLog:
    """Records each association in the database as it starts and ends; maps a live association to its record."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._ids: dict[int, int] = {}
        self._lock = threading.Lock()

    def id_of(self, event: Event) -> int | None:
        with self._lock:
            return self._ids.get(id(event.assoc))

    def started(self, event: Event) -> None:
        requestor = event.assoc.requestor
        association_id = self.queue.association_started(requestor.ae_title, f"{requestor.address}:{requestor.port}")
        with self._lock:
            self._ids[id(event.assoc)] = association_id

    def ended(self, event: Event, state: AssociationState) -> None:
        """Released or aborted; a connection closed with neither (dropped) counts as aborted."""
        with self._lock:
            association_id = self._ids.pop(id(event.assoc), None)
        if association_id is None:
            return
        self.queue.association_ended(association_id, state)
        kind, count = self.queue.association_state(association_id)
        if kind != "released" and count:
            logger.warning(
                "Association %d from %s ended without a release after %d instances: its study waits the cut-off wait",
                association_id,
                event.assoc.requestor.ae_title,
                count,
            )

    def handlers(self) -> list[tuple]:
        return [
            (evt.EVT_ESTABLISHED, self.started),
            (evt.EVT_RELEASED, lambda event: self.ended(event, "released")),
            (evt.EVT_ABORTED, lambda event: self.ended(event, "aborted")),
            (evt.EVT_CONN_CLOSE, self.connection_closed),
        ]

    def connection_closed(self, event: Event) -> None:
        state = closed_connection_state(event.assoc.dul.state_machine.current_state)
        if state is not None:
            self.ended(event, state)


def closed_connection_state(dul_state: str) -> AssociationState | None:
    """What a closed TCP connection says of its association, from the upper layer's state (PS3.8 9.2) when it closed.

    In Sta13 the gateway has already sent its A-RELEASE-RP or A-ABORT, and EVT_RELEASED or EVT_ABORTED records the
    outcome: pynetdicom sends the release response before it fires EVT_RELEASED, so a sender that closes at once on
    the response used to win the race and a released association was recorded as aborted (2 in 40 under load),
    making its study wait the cut-off. In any other state the connection dropped: it counts as aborted.
    """
    return None if dul_state == "Sta13" else "aborted"


def received_data_set(event: Event, affected: str) -> tuple[Dataset, Refusal | None]:
    """The C-STORE's data set, and why it must be refused (None when it can be stored)."""
    try:
        ds: Dataset = event.dataset
        return ds, storage_refusal(ds, event.encoded_dataset(include_meta=False), str(event.context.transfer_syntax), affected)
    except UNDECODABLE as error:
        return Dataset(), undecodable_refusal(error)


def store_handler(
    config: GatewayConfig,
    queue: JobQueue,
    on_stored: Callable[[ReceivedInstance], None] | None = None,
    associations: AssociationLog | None = None,
    storage_refused: Callable[[], str | None] | None = None,
) -> Callable[[Event], int]:
    def handle_store(event: Event) -> int:
        calling = event.assoc.requestor.ae_title
        affected = str(event.request.AffectedSOPInstanceUID or "")
        if storage_refused is not None and (full := storage_refused()):  # crossed during an association already accepted
            logger.warning("Refused C-STORE from %s (SOP instance %s) with 0xA700: %s", calling, affected or "?", full)
            return OUT_OF_RESOURCES
        ds, refusal = received_data_set(event, affected)
        if refusal:
            logger.warning(
                "Refused C-STORE from %s (SOP instance %s) with 0x%04X: %s", calling, affected or "?", refusal.status, refusal.reason
            )
            return failure_status(refusal)
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        path = instance_path(config.incoming_dir, study, series, sop)
        data = event.encoded_dataset(include_meta=True)
        existed = path.exists()
        try:
            atomic_write(path, data)
        except OSError as error:  # a full disk or a file-size limit: nothing is left, the association goes on
            reason = write_failure(error)
            logger.error("Could not store SOP instance %s from %s, answered 0xA700: %s", sop, calling, reason)
            return failure_status(Refusal(OUT_OF_RESOURCES, reason, reason[:64]))
        try:
            instance = ReceivedInstance(
                sop_instance_uid=sop,
                sop_class_uid=str(ds.SOPClassUID),
                study_uid=study,
                series_uid=series,
                group_key=group_key(config.grouping, study, series),
                path=path,
                calling_aet=calling,
                content_sha256=hashlib.sha256(data).hexdigest(),
                association_id=associations.id_of(event) if associations else None,
            )
            kind = queue.record_instance(instance)
        except Exception:
            logger.exception("Could not record SOP instance %s from %s", sop, calling)
            if not existed:  # the sender sends it again; an unrecorded file would come back as an orphan
                path.unlink(missing_ok=True)
                remove_empty_dirs([path.parent, path.parent.parent])
            return OUT_OF_RESOURCES
        if kind == "duplicate":
            logger.info("Received SOP instance %s again from %s, unchanged and already processed: no new job", sop, calling)
        elif kind != "new":
            logger.info("Received SOP instance %s again from %s (%s); it waits for a job", sop, calling, kind)
        if on_stored:
            on_stored(instance)
        return SUCCESS

    return handle_store


def failure_status(refusal: Refusal) -> Dataset:
    """The C-STORE response's status with its Error Comment and, for bad attributes, their tags as Offending Element."""
    status = Dataset()
    status.Status = refusal.status
    status.ErrorComment = refusal.comment
    if refusal.offending:
        status.OffendingElement = [Tag(keyword) for keyword in refusal.offending]
    return status


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


def storage_gate(storage_refused: Callable[[], str | None]) -> Callable[[Event], None]:
    """Reject an association proposing any storage SOP class while ``storage_refused()`` gives a reason (C-ECHO alone is
    accepted). As MONAI Deploy's Informatics Gateway (its ScpServiceInternal rejects the association when it cannot
    store, and answers a C-STORE that meets a full disk with a resource-limitation status): a sender's queue then holds the
    study and retries, rather than sending every instance to be refused one by one. Rejected-transient, service provider
    (presentation), local limit exceeded: pynetdicom's own answer when ``maximum_associations`` is reached, since a disk
    that is cleaned is not a permanent refusal (that gateway says permanent, no reason given)."""

    def check(event: Event) -> None:
        contexts = event.assoc.requestor.primitive.presentation_context_definition_list
        if all(context.abstract_syntax == Verification for context in contexts):
            return
        requestor = event.assoc.requestor
        calling = requestor.primitive.calling_ae_title.strip()
        if calling not in event.assoc.ae.require_calling_aet:
            return  # the allow-list rejects it, and logs why
        if full := storage_refused():
            logger.warning("Rejected association from %s (%s:%s): %s", calling, requestor.address, requestor.port, full)
            event.assoc.acse.send_reject(0x02, 0x03, 0x02)
            event.assoc.kill()  # as pynetdicom after its own rejections: the A-ASSOCIATE-RJ goes out before the socket closes

    return check


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's server with the TLS handshake in each association's own thread (pynetdicom's own does it in the
    accepting thread, where one client that connects and never speaks TLS holds up every other), a log line for each
    refused handshake, and ``also_stop``: the plain port's server, stopped with it."""

    handshake_timeout_s = 30.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.also_stop: list[ThreadedAssociationServer] = []

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        return self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False), address

    def process_request_thread(self, request: ssl.SSLSocket, client_address: tuple[str, int]) -> None:
        try:
            request.settimeout(self.handshake_timeout_s)
            request.do_handshake()
            request.settimeout(None)
        except OSError as error:
            logger.warning("Refused a connection from %s:%s: %s", *client_address[:2], handshake_failure(error, "client"))
            self.shutdown_request(request)
            return
        subject = dict(pair for rdn in (request.getpeercert() or {}).get("subject", ()) for pair in rdn)
        logger.info(
            "TLS connection from %s:%s (%s, %s)",
            *client_address[:2],
            request.version(),
            f"client certificate CN={subject['commonName']}" if "commonName" in subject else "no client certificate",
        )
        super().process_request_thread(request, client_address)

    def shutdown(self) -> None:
        for server in self.also_stop:
            server.shutdown()
        super().shutdown()


def start_tls_server(ae: AE, config: GatewayConfig, handlers: list) -> TlsAssociationServer:
    """The DICOM TLS server on ``port`` (and the plain one on ``tls.plain_port``, when configured), in background threads."""
    tls = config.tls
    context = server_context(tls.certificate, tls.private_key, tls.ca_certificates, tls.require_client_certificate)
    server = ae.make_server((config.host, config.port), evt_handlers=handlers, ssl_context=context, server_class=TlsAssociationServer)
    ae._servers.append(server)  # as AE.start_server does: the server's shutdown() and AE.shutdown() use this list
    name = f"AcceptorServer@{time.strftime('%Y%m%d%H%M%S')}"  # the name pynetdicom gives (gateway.health looks for it)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    if tls.plain_port is not None:
        server.also_stop.append(ae.start_server((config.host, tls.plain_port), block=False, evt_handlers=handlers))
    return server


def start_scp(
    config: GatewayConfig,
    queue: JobQueue,
    on_stored: Callable[[ReceivedInstance], None] | None = None,
    storage_refused: Callable[[], str | None] | None = None,
) -> ThreadedAssociationServer:
    """Listen on (host, port) in background threads; returns the server (call ``shutdown()`` to stop). ``storage_refused``
    (the disk watermark, ``gateway.resources``) says why no instance can be stored now, or None."""
    ae = make_ae(config)
    associations = AssociationLog(queue)
    handlers = [
        *associations.handlers(),
        (evt.EVT_C_STORE, store_handler(config, queue, on_stored, associations, storage_refused)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_REJECTED, rejection_logger(config)),
        *([(evt.EVT_REQUESTED, storage_gate(storage_refused))] if storage_refused else []),
    ]
    if config.tls is None:
        server = ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
    else:
        server = start_tls_server(ae, config, handlers)
        logger.info(
            "DICOM TLS on port %d (client certificate %s)%s",
            config.port,
            "required" if config.tls.require_client_certificate else "checked when offered" if config.tls.ca_certificates else "not asked",
            f"; without TLS on port {config.tls.plain_port}" if config.tls.plain_port is not None else "",
        )
    logger.info("Listening as %s on %s:%d (callers: %s)", config.ae_title, config.host, config.port, ", ".join(config.allowed_calling_aets))
    return server
