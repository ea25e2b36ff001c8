"""The MSD Task09-layout writer: files, dataset.json, NIfTI orientation, and agreement with the app's path."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from operators.ct.preprocessing import spleen_dict_transforms, spleen_image_transforms, volume_to_metatensor
from operators.models.config import load_model_config
from training.synthetic.ct_phantom import make_abdomen_phantom
from training.synthetic.dicom_series import centred_origin_lps_mm
from training.synthetic.msd import case_seed, write_msd_spleen_dataset

SHAPE, SPACING = (20, 48, 40), (5.0, 8.0, 9.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("msd")
    return out, write_msd_spleen_dataset(out, 2, SHAPE, SPACING, seed=4)


def test_layout_and_dataset_json(dataset):
    out, cases = dataset
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "spleen"} and meta["modality"] == {"0": "CT"}
    assert meta["numTraining"] == 2
    assert meta["training"][0] == {"image": "./imagesTr/spleen_1.nii.gz", "label": "./labelsTr/spleen_1.nii.gz"}
    for entry in meta["training"]:
        assert (out / entry["image"]).is_file() and (out / entry["label"]).is_file()
    assert [c.case_id for c in cases] == [1, 2]


def test_nifti_is_xyz_with_a_ras_affine(dataset):
    _, cases = dataset
    image = nib.load(cases[0].image)
    label = nib.load(cases[0].label)
    assert image.shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")  # i toward patient left = RAS -x, as in MSD
    assert np.allclose(np.abs(np.diag(image.affine)[:3]), (SPACING[2], SPACING[1], SPACING[0]))
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
    phantom = make_abdomen_phantom(SHAPE, SPACING, seed=case_seed(4, 1))
    assert np.array_equal(np.asarray(image.dataobj), phantom.hu_zyx.transpose(2, 1, 0))
    assert np.array_equal(np.asarray(label.dataobj), phantom.spleen_mask_zyx.transpose(2, 1, 0))


def test_training_loader_and_app_preprocessing_agree(dataset):
    _, cases = dataset
    preprocessing = load_model_config("spleen_ct_segmentation")["preprocessing"]
    loaded = Compose(
        [LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"]), *spleen_dict_transforms(preprocessing)]
    )({"image": str(cases[0].image), "label": str(cases[0].label)})
    phantom = make_abdomen_phantom(SHAPE, SPACING, seed=case_seed(4, 1))
    affine_lps = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    affine_lps[:3, 3] = centred_origin_lps_mm(SHAPE, SPACING)
    app = spleen_image_transforms(preprocessing)(volume_to_metatensor(phantom.hu_zyx.astype(np.float32), affine_lps))
    assert loaded["image"].shape == app.shape
    assert np.allclose(loaded["image"].affine.numpy(), app.affine.numpy())
    assert float((loaded["image"] - app).abs().max()) < 1e-5


def test_random_acquisitions_vary(tmp_path):
    cases = write_msd_spleen_dataset(tmp_path, 2, seed=11)
    for case in cases:
        _, in_plane, _ = case.spacing_zyx_mm
        assert 0.7 <= in_plane <= 1.6 and 1.5 <= case.spacing_zyx_mm[0] <= 3.0
        assert case.shape_zyx[1] <= 512
    assert cases[0].spacing_zyx_mm != cases[1].spacing_zyx_mm


def test_case_seeds_avoid_small_demo_seeds():
    seeds = {case_seed(dataset_seed, case) for dataset_seed in range(3) for case in range(1, 42)}
    assert len(seeds) == 3 * 41 and min(seeds) > 10_000
