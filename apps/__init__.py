"""The project's MONAI Deploy applications."""
