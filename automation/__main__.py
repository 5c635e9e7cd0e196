"""`python -m automation --version`: the installed release, without starting Django."""

import argparse

from automation import __version__


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m automation",
        description="The automation rule engine. Run it with `manage.py serve` (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"automation {__version__}")
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":
    main()
