"""Training of the spleen CT segmentation model (model_zoo/spleen_ct_segmentation) on synthetic phantoms.

Stages, each a typed function with a thin CLI (``python -m training.spleen {prepare,train,evaluate,export}``):

- :func:`training.spleen.prepare.prepare`: write a synthetic MSD Task09-layout dataset;
- :func:`training.spleen.train.train`: train the bundle's UNet into a self-describing run folder;
- :func:`training.spleen.evaluate.evaluate`: sliding-window Dice per case and mean;
- :func:`training.spleen.export.export`: TorchScript with the model card embedded (``extra/metadata.json``).
"""
