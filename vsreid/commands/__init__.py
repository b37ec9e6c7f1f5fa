"""Tool subcommands of ``vsreid``: each module has a docstring, ``add_arguments(parser)`` and ``run(args)``."""
import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_split_argument(container, help: str, **kw) -> None:
    """``--split NAME`` (a split file ``ImageSets/2017/<NAME>.txt``) into ``args.split``, with ``--set``, the DAVIS
    toolkit's spelling, as an alias. ``container`` is a parser or a group of one."""
    container.add_argument("--split", "--set", dest="split", metavar="NAME",
                           help=f"{help} (--set: the DAVIS toolkit's spelling)", **kw)
