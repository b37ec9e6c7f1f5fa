"""The ``vsreid`` command: Lightning subcommands (fit, validate, predict) and the project's tools.

Each tool lives in ``vsreid/commands/<name>.py`` with a module docstring (its help), ``add_arguments(parser)`` and
``run(args) -> int``. Lightning subcommands are parsed by :class:`lightning.pytorch.cli.LightningCLI`. Tool options
take the Lightning commands' spellings too: ``--davis_root`` for ``--davis-root``, ``--sequences [a,b]`` or ``a,b``.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import logging
import sys
from pathlib import Path

from vsreid.data.errors import DataError

# subcommand -> module under vsreid.commands
TOOLS = {
    "segment": "segment",
    "check": "check",
    "flow": "flow",
    "evaluate": "evaluate",
    "evaluate-reid": "evaluate_reid",
    "synth": "synth",
    "import-video": "import_video",
    "convert-checkpoint": "convert_checkpoint",
    "export-model": "export_model",
}
LIGHTNING = {
    "fit": "train or online-finetune MP2S (vsreid fit -c configs/pretrain_lite.yaml)",
    "validate": "one-step propagation IoU of a checkpoint on a config's validation sequences",
    "predict": "segment DAVIS sequences (vsreid predict -c configs/davis_lite.yaml --data.root ROOT)",
}


def _tool_module(name: str):
    return importlib.import_module(f"vsreid.commands.{TOOLS[name]}")


def _summary(name: str) -> str:
    """The first line of a tool's docstring, read from its source without importing it (``--help`` stays fast)."""
    source = Path(__file__).with_name("commands") / f"{TOOLS[name]}.py"
    return (ast.get_docstring(ast.parse(source.read_text())) or "").strip().splitlines()[0]


def _print_help() -> None:
    print("usage: vsreid <command> [options]   (vsreid <command> --help for its options)\n")
    print("Lightning commands (configured with -c CONFIG.yaml and --section.key value overrides):")
    for name, text in LIGHTNING.items():
        print(f"  {name:<20}{text}")
    print("\nTools:")
    for name in TOOLS:
        print(f"  {name:<20}{_summary(name)}")
    print("\nTool options also take the Lightning spellings: --davis_root for --davis-root, --sequences [a,b].")


def _accept_underscores(parser: argparse.ArgumentParser) -> None:
    """Every ``--long-option`` of a tool also answers to ``--long_option``, the spelling of the Lightning commands
    (``--finetune_steps``); help shows the options as the tool declares them."""
    for action in parser._actions:
        for option in action.option_strings:
            alias = "--" + option[2:].replace("-", "_")
            if option.startswith("--") and alias not in parser._option_string_actions:
                parser._option_string_actions[alias] = action


def _sequence_names(values: list[str]) -> list[str]:
    """``--sequences`` as a tool takes it (``a b``) or as the Lightning commands do (``[a,b]``, ``a,b``)."""
    return [name.strip() for value in values for name in value.strip().strip("[]").split(",") if name.strip()]


def _run_tool(name: str, argv: list[str]) -> int:
    module = _tool_module(name)
    parser = argparse.ArgumentParser(prog=f"vsreid {name}", description=(module.__doc__ or "").strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    _accept_underscores(parser)
    args = parser.parse_args(argv)
    if isinstance(getattr(args, "sequences", None), list):
        args.sequences = _sequence_names(args.sequences)
    try:
        return int(module.run(args) or 0)
    except DataError as e:
        print(f"vsreid {name}: error: {e}", file=sys.stderr)
        return 2


class _StdoutHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stdout`` is when a record is emitted."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the property always answers sys.stdout
        pass


def _info_to_stdout() -> None:
    """Lightning's progress notes ("GPU available: ...", tips) go to stdout, so stderr holds only problems."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
                replacement = _StdoutHandler()
                replacement.setLevel(handler.level)
                replacement.setFormatter(handler.formatter)
                logger.addHandler(replacement)


def _run_lightning(argv: list[str]) -> int:
    from vsreid.lightning.cli import run_lightning_cli

    _info_to_stdout()
    try:
        cli = run_lightning_cli(argv)
    except DataError as e:
        print(f"vsreid {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    # DDP launched by this process: return only when every other rank has exited, failing with the first failure
    for rank, proc in enumerate(getattr(getattr(cli.trainer.strategy, "launcher", None), "procs", []), start=1):
        code = proc.wait()
        if code != 0:
            print(f"vsreid {argv[0]}: error: local rank {rank} exited with code {code}", file=sys.stderr)
            return code if code > 0 else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    if argv[0] in ("-V", "--version"):
        from vsreid import __version__

        print(f"vsreid {__version__}")
        return 0
    if argv[0] in TOOLS:
        return _run_tool(argv[0], argv[1:])
    if argv[0] in LIGHTNING:
        return _run_lightning(argv)
    print(f"vsreid: unknown command '{argv[0]}'", file=sys.stderr)
    _print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
