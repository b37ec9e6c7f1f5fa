"""I/O layer: DAVIS layout, label PNGs, optical flow files, video import, synthetic sequences (numpy/OpenCV only)."""
from .davis import DavisRoot, SequenceInfo
from .errors import DataError
from .labels import davis_palette, overlay, read_frame, read_labels, write_frame, write_labels

__all__ = ["DataError", "DavisRoot", "SequenceInfo", "davis_palette", "overlay", "read_frame", "read_labels",
           "write_frame", "write_labels"]
