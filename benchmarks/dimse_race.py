"""How often pynetdicom 3.0.4's requestor reactor takes a C-STORE response from its sender, with and without the
guard (``gateway.sender.SenderAE``, which applies ``keep_responses``): ``python -m benchmarks.dimse_race [--rounds 12] [--stores 300]``.

A separate-process pynetdicom storage SCP answers every C-STORE with success on loopback. Each round sends
``stores`` C-STOREs over each of 8 concurrent associations; rounds alternate unguarded and guarded. A response
the reactor takes is logged by pynetdicom ("Received unexpected C-STORE service message") and dropped, the sender
waits out its DIMSE timeout (3 s) and aborts, and the association's remaining C-STOREs go unanswered; with the guard
the response is put back (logged at DEBUG) and answered. Prints one JSON line per round and a summary; exit 1 if a
guarded round had an unanswered C-STORE.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from gateway.sender import SenderAE
from testkit.gateway_samples import ct_series
from testkit.orthanc import free_port

ASSOCIATIONS = 8
SCP_AET = "STORE_SCP"
SCP = """
import sys
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage
ae = AE(ae_title=sys.argv[2])
ae.add_supported_context(CTImageStorage)
ae.maximum_associations = 16
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
"""


class Taken(logging.Handler):
    """Counts the responses the reactor took: dropped (pynetdicom's warning) or put back (the guard's debug line)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.count += "Received unexpected C-STORE service message" in message or "took is put back" in message


def one_round(port: int, stores: int, guarded: bool) -> dict:
    taken = Taken()
    for name in ("pynetdicom", "gateway.sender"):
        logging.getLogger(name).addHandler(taken)
    logging.getLogger("gateway.sender").setLevel(logging.DEBUG)
    [ds] = ct_series(1)

    def send(_: int) -> list[int | None]:
        ae = (SenderAE if guarded else AE)(ae_title="SCU")
        ae.dimse_timeout = 3
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title=SCP_AET)
        statuses: list[int | None] = []
        for _ in range(stores):
            statuses.append(getattr(assoc.send_c_store(ds), "Status", None) if assoc.is_established else None)
        if assoc.is_established:
            assoc.release()
        return statuses

    began = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=ASSOCIATIONS) as pool:
            statuses = [status for batch in pool.map(send, range(ASSOCIATIONS)) for status in batch]
    finally:
        for name in ("pynetdicom", "gateway.sender"):
            logging.getLogger(name).removeHandler(taken)
    return {
        "guarded": guarded,
        "c_stores": len(statuses),
        "unanswered": sum(status is None for status in statuses),
        "responses_taken_by_the_reactor": taken.count,
        "seconds": round(time.monotonic() - began, 1),
    }


def summary(rounds: list[dict]) -> dict:
    out = {}
    for guarded in (False, True):
        mine = [row for row in rounds if row["guarded"] is guarded]
        out["guarded" if guarded else "unguarded"] = {
            "rounds": len(mine),
            "rounds_with_unanswered": sum(row["unanswered"] > 0 for row in mine),
            "unanswered": sum(row["unanswered"] for row in mine),
            "responses_taken_by_the_reactor": sum(row["responses_taken_by_the_reactor"] for row in mine),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="rounds of each kind (default 12)")
    parser.add_argument("--stores", type=int, default=300, help="C-STOREs per association per round (default 300)")
    args = parser.parse_args(argv)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    port = free_port()
    scp = subprocess.Popen([sys.executable, "-c", SCP, str(port), SCP_AET], stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        rounds = []
        for index in range(2 * args.rounds):
            rounds.append(one_round(port, args.stores, guarded=index % 2 == 1))
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        scp.terminate()
        scp.wait(timeout=30)
    result = summary(rounds)
    print(json.dumps(result), flush=True)
    return 1 if result["guarded"]["unanswered"] else 0


if __name__ == "__main__":
    sys.exit(main())
