"""Spleen CT segmentation: a DICOM CT series in; DICOM SEG, STL, overlay PNG and JSON summary out."""
