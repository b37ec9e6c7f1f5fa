"""Tool subcommands of ``vsreid``: each module has a docstring, ``add_arguments(parser)`` and ``run(args)``."""
import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
