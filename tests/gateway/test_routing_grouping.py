"""Routing by DICOM attributes, grouping keys and the quiet period: pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.multival import MultiValue

from gateway.config import Route
from gateway.grouping import group_key, quiet_groups
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
    last = {"study:a": 100.0, "study:b": 104.5, "study:c": 95.0}
    assert quiet_groups(last, now=105.0, quiet_period_s=5.0) == ["study:a", "study:c"]
    assert quiet_groups(last, now=110.0, quiet_period_s=5.0) == ["study:a", "study:b", "study:c"]
