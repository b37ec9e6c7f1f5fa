"""vsreid: video object segmentation with re-identification (VS-ReID) on PyTorch Lightning."""

__version__ = "0.1.0"
