"""What every command-line tool shares: ``--c CONFIG`` and ``--o Section.key=value ...`` overrides, and
for the tools that run a trained model, ``--model RELEASE_DIR`` as the alternative to ``--c``."""
from __future__ import annotations

import argparse

from .config import ConfigError, load_config

__all__ = ["config_parser", "load_config_from_args", "add_model_arg", "model_config_from_args"]


def config_parser(doc: str | None, config_required: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--c", "--config", dest="config", required=config_required, help="YAML config")
    parser.add_argument("--o", "--opt", dest="opt", nargs="*", default=[],
                        help="overrides Section.key=value (values parsed as YAML), any depth, several at once")
    return parser


def load_config_from_args(args: argparse.Namespace) -> dict:
    return load_config(args.config, args.opt)


def add_model_arg(parser: argparse.ArgumentParser) -> None:
    """``--model DIR``: a release folder; with neither --c nor --model the shipped model is used
    (build the parser with ``config_required=False``)."""
    from .engine.release import DEFAULT_RELEASE
    parser.add_argument("--model", default=None,
                        help=f"a release folder (config.yml + model.pth); default {DEFAULT_RELEASE}")


def model_config_from_args(args: argparse.Namespace) -> tuple[dict, str | None]:
    """(config, weights path): from --c (weights in Global.checkpoints or Global.pretrained_model) or
    from a release folder (--model, default the shipped model); --o applies to either."""
    from .engine.release import load_release
    if args.config and args.model:
        raise ConfigError("give either --c (with Global.checkpoints) or --model, not both")
    if args.model or not args.config:
        return load_release(args.model, args.opt)
    config = load_config_from_args(args)
    g = config.get("Global", {})
    return config, g.get("checkpoints") or g.get("pretrained_model")
