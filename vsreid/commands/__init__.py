"""Tool subcommands of ``vsreid``: each module has a docstring, ``add_arguments(parser)`` and ``run(args)``."""
