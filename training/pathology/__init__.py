"""Training and evaluation of the pathology tumor detection model (model_zoo/pathology_tumor_detection)
on data in the Camelyon16 layout: ``python -m training.pathology {prepare,train,evaluate,export}``."""
