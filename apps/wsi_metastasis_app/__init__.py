"""Whole-slide metastasis detection: H&E lymph-node slides in; probability maps, detections and SEG out."""
