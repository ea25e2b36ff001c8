"""The synthetic slides' lesion annotations as ASAP XML files (the Camelyon16 format).

The format, and its reader and rasteriser, are :mod:`training.pathology.annotations`: real data
depends on them; only the writer is synthetic.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from training.pathology.annotations import TUMOR_GROUP


def write_asap_xml(
    polygons: Iterable[np.ndarray], path: str | Path, group: str = TUMOR_GROUP, color: str = "#F4FA58", group_color: str = "#00ff00"
) -> Path:
    """Write polygons ((n, 2) level-0 x, y) as a Camelyon16-style ASAP XML file; returns the path.

    An empty ``polygons`` writes a file with no annotations (and still the group).
    """
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for k, poly in enumerate(polygons):
        p = np.asarray(poly, np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
            raise ValueError(f"polygon {k} must be (n >= 3, 2), got {p.shape}")
        ann = ET.SubElement(annotations, "Annotation", {"Name": f"Annotation {k}", "Type": "Polygon", "PartOfGroup": group, "Color": color})
        coords = ET.SubElement(ann, "Coordinates")
        for order, (x, y) in enumerate(p):
            ET.SubElement(coords, "Coordinate", {"Order": str(order), "X": f"{x:.4f}", "Y": f"{y:.4f}"})
    groups = ET.SubElement(root, "AnnotationGroups")
    g = ET.SubElement(groups, "Group", {"Name": group, "PartOfGroup": "None", "Color": group_color})
    ET.SubElement(g, "Attributes")
    ET.indent(root, space="\t")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ET.tostring(root, encoding="unicode")
    path.write_text('<?xml version="1.0"?>\n' + text + "\n", encoding="utf-8")
    return path
