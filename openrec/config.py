"""YAML configs: ``_BASE_`` inheritance and ``A.b.c=value`` overrides, loaded with ``yaml.safe_load``."""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable

import yaml

__all__ = ["ConfigError", "load_config", "apply_overrides", "parse_override", "merge_dicts", "dump_config"]


class ConfigError(ValueError):
    """A configuration mistake. The message names the offending key or path and what is accepted."""


REPLACE_KEY = "_REPLACE_"


def merge_dicts(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a deep copy of ``base`` (``update`` wins).

    A mapping in ``update`` that holds ``_REPLACE_: true`` replaces the base's mapping instead of
    merging into it (e.g. swapping a decoder whose keys differ from the base's).
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and value.get(REPLACE_KEY) is True:
            out[key] = _strip_replace(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = _strip_replace(value)
    return out


def _strip_replace(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_replace(v) for k, v in value.items() if k != REPLACE_KEY}
    return copy.deepcopy(value)


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _load_with_bases(path: str, chain: tuple[str, ...]) -> dict:
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(chain + (path,))}")
    data = _read_yaml(path)
    bases = data.pop("_BASE_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _BASE_ must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merged = merge_dicts(merged, _load_with_bases(base_path, chain + (path,)))
    return merge_dicts(merged, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'A.b.c=value'`` -> (['A', 'b', 'c'], value parsed as a YAML scalar/list/mapping)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like Section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty component in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
    return parts, value


def apply_overrides(config: dict, overrides: Iterable[str]) -> dict:
    """Apply every override in order; each sets exactly one leaf and keeps its siblings.

    List elements are addressed by index (``Architecture.Encoder.dims.0=32``). Missing
    intermediate mappings are created; a misspelled leaf is caught by the strict builders later.
    """
    config = copy.deepcopy(config)
    for item in overrides:
        parts, value = parse_override(item)
        node: Any = config
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = node[_list_index(node, part, where)]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth]) or '<root>'} is a {type(node).__name__}, not a mapping")
        leaf = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, leaf, ".".join(parts))] = value
        elif isinstance(node, dict):
            node[leaf] = value
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:-1])} is a {type(node).__name__}, not a mapping")
    return config


def _list_index(node: list, part: str, where: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"override key {where}: {part!r} indexes a list and must be an integer") from None
    if not -len(node) <= index < len(node):
        raise ConfigError(f"override key {where}: index {index} out of range for a list of {len(node)}")
    return index


def load_config(path: str, overrides: Iterable[str] | None = None) -> dict:
    """Load ``path`` (resolving ``_BASE_`` files relative to it) and apply ``overrides``."""
    config = _load_with_bases(path, ())
    return apply_overrides(config, overrides or [])


def dump_config(config: dict, path: str) -> None:
    """Write the resolved config atomically (temp file + rename)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
