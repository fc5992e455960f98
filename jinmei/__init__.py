"""jinmei — the 金煤工程 data pipeline. This package is the composition root: the ``jinmei``
command line and the pipeline that wires config, ingest, detectors and alerts together."""

__version__ = "0.1.0"
