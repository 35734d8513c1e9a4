"""A trained split model as two deployable halves: ONNX export, a documented wire, and the two runtimes.

- :mod:`deploy.export` — ``splitcv export CKPT --out DIR``: ONNX graphs of each half + ``manifest.json``
  (the only module here that reads checkpoints, so the only one that imports the training code);
- :mod:`deploy.runtime` — the halves under ONNX Runtime, from the export directory alone;
- :mod:`deploy.edge` / :mod:`deploy.server` — ``splitcv edge`` and ``splitcv serve`` over TCP on
  127.0.0.1 (:mod:`deploy.protocol` frames the streams and the answers);
- :mod:`deploy.streams` — the wire bytes, written and read with :mod:`coding`.

Nothing imported by ``deploy.edge``/``deploy.server`` imports Lightning, ``lightning_modules``,
``callbacks`` or ``datamodules``. The wire formats are specified in ``docs/wire-format.md``.
"""
