"""Synthetic data: CT phantoms, DICOM CT series and MSD-layout datasets."""
