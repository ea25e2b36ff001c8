from __future__ import annotations

import numpy as np
import pytest

from operators.ct.slice_geometry import index_to_lps_affine, stack_geometry, uneven_spacing_reason
from testkit.dicom_factories import ct_stack


@pytest.mark.parametrize(
    ("gaps", "expected_fragment"),
    [
        ([2.0, 2.0, 2.0], None),
        ([2.0, 2.001, 1.999], None),
        ([], None),
        ([2.0, 4.0, 2.0], "uneven slice spacing: 4 mm"),
        ([2.0, 0.0, 2.0], "same position"),
        ([1.0, 1.0, 1.1], "uneven slice spacing"),
    ],
)
def test_uneven_spacing_reason_flags_gaps_and_duplicates(gaps, expected_fragment):
    reason = uneven_spacing_reason(np.asarray(gaps, dtype=float))
    if expected_fragment is None:
        assert reason is None
    else:
        assert expected_fragment in reason


def test_stack_geometry_orders_by_position_not_instance_number():
    headers = ct_stack([4.0, 0.0, 2.0, 6.0])  # instance numbers 1..4 in this (shuffled) order
    geometry = stack_geometry(headers)
    assert geometry.order == (1, 2, 0, 3)
    np.testing.assert_allclose(geometry.positions_mm, [0.0, 2.0, 4.0, 6.0])


def test_stack_geometry_uses_the_slice_normal_for_feet_first_order():
    headers = ct_stack([0.0, 2.0, 4.0], orientation=(1, 0, 0, 0, -1, 0))  # normal points to -z
    geometry = stack_geometry(headers)
    np.testing.assert_allclose(geometry.normal, [0, 0, -1])
    np.testing.assert_allclose(np.diff(geometry.positions_mm), [2.0, 2.0])


def test_index_to_lps_affine_maps_column_row_slice_to_patient_mm():
    headers = ct_stack([10.0, 12.5, 15.0], pixel_spacing=(0.5, 0.7))  # (row spacing, column spacing)
    geometry = stack_geometry(headers)
    affine = index_to_lps_affine(headers[geometry.order[0]], geometry, len(headers))
    first = np.asarray(headers[0].ImagePositionPatient, float)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [*first, 1])
    np.testing.assert_allclose(affine @ [1, 0, 0, 1], [*(first + [0.7, 0, 0]), 1])  # next column: +x by column spacing
    np.testing.assert_allclose(affine @ [0, 1, 0, 1], [*(first + [0, 0.5, 0]), 1])  # next row: +y by row spacing
    np.testing.assert_allclose(affine @ [0, 0, 2, 1], [*(first + [0, 0, 5.0]), 1])
