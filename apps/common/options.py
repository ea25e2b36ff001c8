"""Command-line options both apps share: where the result goes when it supersedes an earlier one, and
whether a model whose card does not vouch for its weights may run."""

from __future__ import annotations

import argparse

from operators.dicom.uids import uid_problem


def dicom_uid(text: str) -> str:
    """argparse type: ``text`` when it is a valid DICOM UID, else an error naming what is wrong."""
    problem = uid_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} is not a DICOM UID: {problem}")
    return text


def add_result_options(parser: argparse.ArgumentParser) -> None:
    """``--result-series-uid``, ``--supersedes-sop-uid`` (a rerun's SEG: same series, new instance, and the
    earlier result it supersedes) and ``--allow-unverified-model``."""
    parser.add_argument(
        "--result-series-uid",
        type=dicom_uid,
        metavar="UID",
        help="SeriesInstanceUID of the SEG (an earlier result's series, when this run supersedes it); default: a new series",
    )
    parser.add_argument(
        "--supersedes-sop-uid",
        type=dicom_uid,
        metavar="UID",
        help="SOP Instance UID of the earlier result this SEG supersedes (recorded in the SEG and summary.json)",
    )
    parser.add_argument(
        "--allow-unverified-model",
        action="store_true",
        help="run a model whose weights do not match the SHA-256 of its model card (flagged as unverified in every output)",
    )
