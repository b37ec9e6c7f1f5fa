"""vsreid: video object segmentation with re-identification (VS-ReID) on PyTorch Lightning.

``from vsreid import Segmenter`` gives the Python API (:mod:`vsreid.engine.api`) without importing Lightning.
"""

__version__ = "0.1.0"

__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str):
    if name == "Segmenter":  # imported on first use: `import vsreid` (the CLI) stays light
        from vsreid.engine.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'vsreid' has no attribute {name!r}")
