"""Routing by DICOM attributes, grouping keys and the quiet period: pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.multival import MultiValue

from gateway.config import Route
from gateway.grouping import Delivery, WaitingGroup, cut_off, group_key, ready_groups, receiving
from gateway.routing import choose_route, routing_attributes
from testkit.gateway_samples import ct_series, write_series

ROUTES = (
    Route(name="spleen", match={"Modality": ("CT",), "ImageType": ("AXIAL",)}, command=("x",)),
    Route(name="wsi", match={"Modality": ("SM",)}, command=("x",)),
    Route(name="abdomen-mr", match={"Modality": ("MR",), "SeriesDescription": ("*abdomen*", "*liver*")}, command=("x",)),
)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"Modality": "CT", "ImageType": MultiValue(str, ["ORIGINAL", "PRIMARY", "AXIAL"])}, "spleen"),
        ({"Modality": "ct", "ImageType": ["DERIVED", "SECONDARY", "axial"]}, "spleen"),
        ({"Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, None),
        ({"Modality": "SM"}, "wsi"),
        ({"Modality": "MR", "SeriesDescription": "T1 Abdomen axial"}, "abdomen-mr"),
        ({"Modality": "MR", "SeriesDescription": "brain"}, None),
        ({"Modality": "SEG"}, None),
        ({}, None),
    ],
    ids=["ct-axial", "case-insensitive", "ct-localizer", "sm", "mr-wildcard", "mr-other", "seg", "nothing"],
)
def test_first_route_whose_every_attribute_matches_wins(attributes, expected):
    route = choose_route(ROUTES, attributes)
    assert (route.name if route else None) == expected


def test_routing_attributes_are_read_from_a_stored_file(tmp_path: Path):
    path = write_series(ct_series(1), tmp_path)[0]
    attributes = routing_attributes(path, ["Modality", "ImageType", "BodyPartExamined"])
    assert attributes["Modality"] == "CT" and "BodyPartExamined" not in attributes
    assert choose_route(ROUTES, attributes).name == "spleen"


def test_group_key_is_the_study_or_the_series():
    assert group_key("study", "1.2", "1.2.3") == "study:1.2"
    assert group_key("series", "1.2", "1.2.3") == "series:1.2.3"
    with pytest.raises(ValueError):
        group_key("patient", "1.2", "1.2.3")


def test_a_group_is_complete_only_after_the_quiet_period():
    last = {key: WaitingGroup(at) for key, at in {"study:a": 100.0, "study:b": 104.5, "study:c": 95.0}.items()}
    assert ready_groups(last, now=105.0, quiet_period_s=5.0) == ["study:a", "study:c"]
    assert ready_groups(last, now=110.0, quiet_period_s=5.0) == ["study:a", "study:b", "study:c"]


@pytest.mark.parametrize(
    ("last_received_at", "cut_off", "up_since", "now", "ready"),
    [
        (100.0, False, 0.0, 110.0, True),  # quiet for 10 s with the gateway up
        (100.0, False, 0.0, 109.9, False),
        (100.0, False, 500.0, 505.0, False),  # restarted at 500: the 400 s it was down do not count
        (100.0, False, 500.0, 510.0, True),
        (600.0, False, 500.0, 610.0, True),  # arrived after the restart: counts from the instance
        (100.0, True, 0.0, 110.0, False),  # cut off mid-association: waits the cut-off wait (60 s)
        (100.0, True, 0.0, 160.0, True),
        (100.0, True, 500.0, 559.0, False),  # cut off by the restart: 60 s with the gateway up
        (100.0, True, 500.0, 560.0, True),
    ],
)
def test_the_quiet_period_counts_only_time_the_gateway_was_up_and_a_cut_off_group_waits_longer(
    last_received_at: float, cut_off: bool, up_since: float, now: float, ready: bool
):
    groups = {"study:a": WaitingGroup(last_received_at, cut_off)}
    chosen = ready_groups(groups, now=now, quiet_period_s=10.0, up_since=up_since, cut_off_wait_s=60.0)
    assert chosen == (["study:a"] if ready else [])


KILLED_AT_50 = Delivery("killed", 10.0, 50.0, owned=True)


@pytest.mark.parametrize(
    ("newest_cut_off", "deliveries", "expected"),
    [
        (True, [], True),  # one receiver: its newest instance's association decides
        (False, [Delivery("released", 0.0, 90.0)], False),
        (False, [KILLED_AT_50, Delivery("released", 20.0, 90.0, owned=True)], True),  # the other receiver's part, begun before
        (False, [KILLED_AT_50, Delivery("released", 60.0, 90.0, owned=True)], False),  # a resend begun after the kill
        (False, [Delivery("aborted", 10.0, None)], True),
    ],
)
def test_a_group_is_cut_off_until_an_association_begun_after_the_cut_off_brings_more(
    newest_cut_off: bool, deliveries: list[Delivery], expected: bool
):
    assert cut_off(newest_cut_off, deliveries) is expected


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        ([Delivery("open", 10.0, owned=True)], True),  # a cluster receiver still receiving part of it
        ([Delivery("open", 10.0, owned=False)], False),  # one gateway (SQLite): the quiet period alone decides
        ([Delivery("released", 10.0, 20.0, owned=True), KILLED_AT_50], False),
    ],
)
def test_a_group_still_coming_in_through_a_cluster_receiver_is_receiving(deliveries: list[Delivery], expected: bool):
    assert receiving(deliveries) is expected


def test_a_receiving_group_does_not_close_however_quiet():
    groups = {"study:a": WaitingGroup(0.0, receiving=True), "study:b": WaitingGroup(0.0)}
    assert ready_groups(groups, now=1000.0, quiet_period_s=10.0) == ["study:b"]
