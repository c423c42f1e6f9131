"""The ``jaxgru`` command. Subcommands arrive with the training and Keras I/O issues."""

from __future__ import annotations

import argparse
import sys

import jaxgru


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxgru`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jaxgru", description=jaxgru.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"jaxgru {jaxgru.__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
