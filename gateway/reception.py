"""Received instances and the associations that brought them, as persisted in the gateway's database.

Each association is recorded when it is established (``open``) and when it ends: ``released`` (the
sender said it was done), ``aborted`` (either side aborted, or the connection dropped), or ``killed``
(still open when the gateway last stopped: the process died before the release). Each instance keeps
its file's SHA-256 and the association it last came in. What a received instance means for the
queue (``Arrival``):

- ``new``: never seen; it waits for the group's quiet period, then a job.
- ``changed``: seen before with other content (or in another series): it waits again, and the job it
  joins reruns the series, superseding the earlier result.
- ``duplicate``: the same content already taken by a job that is pending, running, sending or done:
  no new job.
- ``resent``: the same content, not yet taken by a job (or its job failed, or no route took it): it
  waits again.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.database import Database
from gateway.grouping import CUT_OFF_STATES, Delivery, WaitingGroup, cut_off, receiving

Arrival = Literal["new", "changed", "duplicate", "resent"]
AssociationState = Literal["open", "released", "aborted", "killed"]
CUT_OFF: tuple[AssociationState, ...] = CUT_OFF_STATES
LIVE_JOB_STATES = ("pending", "running", "sending", "done")  # a job in these has taken (or will show) the instance's result


@dataclass(frozen=True)
class ReceivedInstance:
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    group_key: str
    path: Path
    calling_aet: str
    content_sha256: str | None = None  # of the stored file
    association_id: int | None = None


@dataclass(frozen=True)
class KnownInstance:
    """What the database holds for an instance received before."""

    series_uid: str
    content_sha256: str | None
    dispatched: bool


def arrival(known: KnownInstance | None, series_uid: str, content_sha256: str | None, series_has_live_job: bool) -> Arrival:
    """Classify a received instance against what was received before (see the module docstring)."""
    if known is None:
        return "new"
    if known.series_uid != series_uid or content_sha256 is None or known.content_sha256 != content_sha256:
        return "changed"  # an instance recorded before hashes were kept counts as changed: it reruns rather than being lost
    if known.dispatched and series_has_live_job:
        return "duplicate"
    return "resent"


class Reception(Database):
    """The instances and associations tables."""

    process_owner: str | None = None  # this receiver (``node/pid``) in the cluster mode: owner of its associations

    # --- associations -------------------------------------------------------------------------
    def association_started(self, calling_aet: str, peer: str, now: float | None = None, owner: str | None = None) -> int:
        """Record an association; its ``owner`` (the receiver process, default ``process_owner``) renews its
        ``heartbeat_at`` while it is open."""
        now = time.time() if now is None else now
        owner = owner or self.process_owner
        with self._transaction(shared=True) as db:
            association_id = int(
                db.execute(
                    "INSERT INTO associations (calling_aet, peer, state, started_at) VALUES (?, ?, 'open', ?) RETURNING id",
                    (calling_aet, peer, now),
                ).fetchone()[0]
            )
            if owner is not None:
                db.execute(
                    "INSERT INTO association_owners (association_id, owner, heartbeat_at) VALUES (?, ?, ?)", (association_id, owner, now)
                )
        return association_id

    def association_ended(self, association_id: int, state: AssociationState, now: float | None = None) -> None:
        """Record how an open association ended (a later report for one already ended is ignored)."""
        now = time.time() if now is None else now
        with self._transaction(shared=True) as db:
            db.execute("UPDATE associations SET state = ?, ended_at = ? WHERE id = ? AND state = 'open'", (state, now, association_id))

    def associations_killed(self, now: float | None = None, stale_before: float | None = None) -> int:
        """Associations still open were cut off when their receiver stopped without their release: at start, every open
        one (one receiver); with ``stale_before``, those whose receiver last renewed them before it (several receivers),
        each ended when last renewed (so a resend that began after its receiver died counts as later)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            if stale_before is None:
                cursor = db.execute("UPDATE associations SET state = 'killed', ended_at = ? WHERE state = 'open'", (now,))
            else:
                cursor = db.execute(
                    """UPDATE associations SET state = 'killed',
                           ended_at = COALESCE((SELECT heartbeat_at FROM association_owners WHERE association_id = associations.id), ?)
                       WHERE state = 'open' AND id IN (SELECT association_id FROM association_owners WHERE heartbeat_at < ?)""",
                    (now, stale_before),
                )
            return cursor.rowcount

    def associations_alive(self, owner: str, now: float | None = None) -> None:
        """The receiver ``owner`` is alive: renew its open associations."""
        now = time.time() if now is None else now
        with self._transaction(shared=True) as db:
            db.execute(
                """UPDATE association_owners SET heartbeat_at = ? WHERE owner = ?
                   AND association_id IN (SELECT id FROM associations WHERE state = 'open')""",
                (now, owner),
            )

    def association_state(self, association_id: int) -> tuple[AssociationState, int]:
        """The association's state and how many instances it stored."""
        [row] = self._query("SELECT state, instances FROM associations WHERE id = ?", (association_id,))
        return row["state"], row["instances"]

    # --- received instances -------------------------------------------------------------------
    def _series_has_live_job(self, db: sqlite3.Connection, series_uid: str) -> bool:
        """Whether a job that is pending, running, sending or done holds the series."""
        marks = ",".join("?" * len(LIVE_JOB_STATES))
        series = self.SERIES_OF.format(column="jobs.series_uids")
        row = db.execute(
            f"SELECT 1 FROM jobs, {series} WHERE s.value = ? AND jobs.state IN ({marks}) LIMIT 1",
            (series_uid, *LIVE_JOB_STATES),
        ).fetchone()
        return row is not None

    def record_instance(self, instance: ReceivedInstance, now: float | None = None) -> Arrival:
        """Record a stored instance; what it means for the queue (see ``arrival``)."""
        now = time.time() if now is None else now
        with self._transaction(shared=True, key=instance.sop_instance_uid) as db:
            row = db.execute(
                "SELECT series_uid, content_sha256, dispatched FROM instances WHERE sop_instance_uid = ?", (instance.sop_instance_uid,)
            ).fetchone()
            known = None if row is None else KnownInstance(row[0], row[1], bool(row[2]))
            live = known is not None and self._series_has_live_job(db, known.series_uid)
            kind = arrival(known, instance.series_uid, instance.content_sha256, live)
            if kind == "duplicate":
                db.execute(
                    "UPDATE instances SET receive_count = receive_count + 1, received_at = ?, calling_aet = ? WHERE sop_instance_uid = ?",
                    (now, instance.calling_aet, instance.sop_instance_uid),
                )
            else:
                db.execute(
                    """INSERT INTO instances (sop_instance_uid, sop_class_uid, study_uid, series_uid, group_key, path, calling_aet,
                           received_at, content_sha256, association_id)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (sop_instance_uid) DO UPDATE SET sop_class_uid = excluded.sop_class_uid,
                           study_uid = excluded.study_uid, series_uid = excluded.series_uid, group_key = excluded.group_key,
                           path = excluded.path, calling_aet = excluded.calling_aet, received_at = excluded.received_at,
                           content_sha256 = excluded.content_sha256, association_id = excluded.association_id,
                           receive_count = instances.receive_count + 1, dispatched = 0""",
                    (
                        instance.sop_instance_uid,
                        instance.sop_class_uid,
                        instance.study_uid,
                        instance.series_uid,
                        instance.group_key,
                        str(instance.path),
                        instance.calling_aet,
                        now,
                        instance.content_sha256,
                        instance.association_id,
                    ),
                )
            if instance.association_id is not None:
                db.execute("UPDATE associations SET instances = instances + 1 WHERE id = ?", (instance.association_id,))
        return kind

    def known_paths(self) -> set[str]:
        return {row["path"] for row in self._query("SELECT path FROM instances")}

    def waiting_groups(self) -> dict[str, WaitingGroup]:
        """Groups with instances not yet handed to a job: when their newest instance arrived, whether they were cut off
        and whether an association that brought them is still open on a receiver of the cluster (``gateway.grouping``)."""
        rows = self._query(
            """SELECT w.group_key, w.last, a.state FROM (
                   SELECT group_key, MAX(received_at) AS last FROM instances WHERE dispatched = 0 GROUP BY group_key
               ) AS w
               JOIN instances AS i ON i.group_key = w.group_key AND i.dispatched = 0 AND i.received_at = w.last
               LEFT JOIN associations AS a ON a.id = i.association_id"""
        )
        newest: dict[str, tuple[float, bool]] = {}
        for row in rows:  # of several instances received at that very time, any one cut off counts
            newest[row["group_key"]] = (row["last"], row["state"] in CUT_OFF or newest.get(row["group_key"], (0, False))[1])
        deliveries: dict[str, list[Delivery]] = {}
        for row in self._query(
            """SELECT DISTINCT i.group_key, a.id, a.state, a.started_at, a.ended_at, o.owner FROM instances AS i
               JOIN associations AS a ON a.id = i.association_id LEFT JOIN association_owners AS o ON o.association_id = a.id
               WHERE i.dispatched = 0"""
        ):
            deliveries.setdefault(row["group_key"], []).append(
                Delivery(row["state"], row["started_at"], row["ended_at"], row["owner"] is not None)
            )
        return {
            key: WaitingGroup(last, cut_off(newest_cut, deliveries.get(key, ())), receiving(deliveries.get(key, ())))
            for key, (last, newest_cut) in newest.items()
        }

    def waiting_series(self, group_key: str) -> dict[str, Path]:
        """The group's series with waiting instances, each with one of its files (to read its attributes)."""
        rows = self._query(
            "SELECT series_uid, MIN(path) AS path FROM instances WHERE dispatched = 0 AND group_key = ? GROUP BY series_uid", (group_key,)
        )
        return {row["series_uid"]: Path(row["path"]) for row in rows}

    def series_files(self, series_uids: list[str] | tuple[str, ...]) -> dict[str, list[Path]]:
        """Every stored file of these series (a job's input is its series whole, earlier arrivals included)."""
        files: dict[str, list[Path]] = {}
        for uid in series_uids:
            files[uid] = [Path(r["path"]) for r in self._query("SELECT path FROM instances WHERE series_uid = ? ORDER BY path", (uid,))]
        return files

    def instance_count(self) -> int:
        return self._query("SELECT COUNT(*) AS n FROM instances")[0]["n"]
