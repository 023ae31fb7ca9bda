"""The lab's workshop, the only place in the package that imports torch: backbones and their
registry, the Deep Ensemble, its inference graphs and torch runtime, training and ONNX export.
Needs the ``train`` extra (``pip install "ferroute[train]"``)."""
