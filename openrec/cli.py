"""What every command-line tool shares: ``--c CONFIG`` and ``--o Section.key=value ...`` overrides."""
from __future__ import annotations

import argparse

from .config import load_config

__all__ = ["config_parser", "load_config_from_args"]


def config_parser(doc: str | None, config_required: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--c", "--config", dest="config", required=config_required, help="YAML config")
    parser.add_argument("--o", "--opt", dest="opt", nargs="*", default=[],
                        help="overrides Section.key=value (values parsed as YAML), any depth, several at once")
    return parser


def load_config_from_args(args: argparse.Namespace) -> dict:
    return load_config(args.config, args.opt)
