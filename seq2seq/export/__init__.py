"""Exporting trained runs to ONNX and running the exports with ONNX Runtime.

- ``folder``: the export folder's format (manifest, file names), written and read only there;
- ``onnx``: a model's graphs, traced and written with ``torch.onnx``;
- ``run``: ``export_run``, a run directory -> an export folder (what ``seq2seq export`` does);
- ``backend``: the graphs behind the models' own interfaces, for ``from_pretrained``;
- ``readme``: the README.md written into every export.

Only ``backend`` needs onnxruntime, and only ``onnx`` needs the onnx package.
"""
