"""The bundled DAVIS sample (see README.md), installed with the package as vsreid.samples."""
