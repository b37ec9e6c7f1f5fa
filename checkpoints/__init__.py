"""The shipped weights, installed with the package as vsreid.checkpoints (Segmenter.from_pretrained("lite0"))."""
