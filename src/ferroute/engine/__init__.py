"""How the core runs a model without torch: a model folder's config, its ONNX graph on
onnxruntime, and the verified on-disk cache."""
