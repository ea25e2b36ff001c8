#!/usr/bin/env bash
# The main job on the embedded demo inputs, from a fresh machine: set-up, demo data, then the spleen
# app on the demo CT and the WSI app on the demo slide, each with its default model.
# Outputs go to demo_output/ (or the folder given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${1:-demo_output}
ulimit -s 32768 2>/dev/null || true  # Holoscan asks for a 32 MiB stack
export HOLOSCAN_LOG_LEVEL=${HOLOSCAN_LOG_LEVEL:-WARN}

.venv/bin/python -m training.synthetic.demo_inputs .demo  # rewritten only when its generator changed
echo "== spleen_seg_app on the demo abdomen phantom (default model: model_zoo/spleen_ct_segmentation/model.ts)"
.venv/bin/python apps/spleen_seg_app -i .demo/spleen_ct/dicom -o "$out/spleen_seg_app" -l WARN
.venv/bin/python -m apps.spleen_seg_app.report "$out/spleen_seg_app" --truth .demo/spleen_ct/spleen_truth.npy
echo "== wsi_metastasis_app on the demo lymph-node slide (default model: model_zoo/pathology_tumor_detection/model.pt)"
.venv/bin/python apps/wsi_metastasis_app -i .demo/wsi/demo_slide.tif -o "$out/wsi_metastasis_app" -l WARN
.venv/bin/python -m training.pathology.slide_report "$out/wsi_metastasis_app/demo_slide" --ground-truth .demo/wsi/ground_truth
