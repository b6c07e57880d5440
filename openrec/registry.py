"""One registry mechanism for every buildable component, strict about config keys and types.

A component is a class registered under a name. ``Registry.build(cfg, **injected)`` takes a mapping
with a ``name`` key; every other key must be a constructor parameter (not one the builder injects),
and its value must match the parameter's annotation. Mistakes raise :class:`ConfigError` naming
the key, the component and the accepted values. The caller's dict is never modified.
"""
from __future__ import annotations

import difflib
import inspect
import types
import typing
from typing import Any, Callable, Literal, Union

from .config import ConfigError

__all__ = ["Registry", "check_type", "ENCODERS", "DECODERS", "LOSSES", "POSTPROCESSORS", "METRICS", "LABEL_ENCODERS"]


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_describe(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list of {_describe(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def check_type(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits an annotation (int is accepted for float; bool is never an int)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        return any(check_type(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(check_type(v, a) for v, a in zip(value, args))
        return not args or all(check_type(v, args[0]) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str | None = None):
        def wrap(cls):
            key = name or cls.__name__
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = cls
            return cls
        return wrap

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str, where: str = "") -> Callable:
        if name not in self._items:
            raise ConfigError(f"{where or self.kind}.name: unknown {self.kind} {name!r}{did_you_mean(name, self._items)} "
                              f"(accepted: {', '.join(self.names())})")
        return self._items[name]

    def build(self, cfg: dict, where: str = "", **injected):
        """Build from ``cfg`` (``name`` + constructor keys); ``injected`` keys come from the builder."""
        where = where or self.kind
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {type(cfg).__name__}")
        if "name" not in cfg:
            raise ConfigError(f"{where}: missing 'name' (accepted: {', '.join(self.names())})")
        cls = self.get(cfg["name"], where)
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        # Builders offer context (in_channels, charset); a component receives what its constructor names.
        accepted = inspect.signature(cls).parameters
        offered = {k: v for k, v in injected.items() if k in accepted}
        validate_kwargs(cls, kwargs, where=f"{where} ({cfg['name']})", injected=set(injected))
        return cls(**kwargs, **offered)


def validate_kwargs(cls: Callable, kwargs: dict, where: str, injected: set[str] = frozenset()) -> None:
    """Raise ConfigError for unknown, injected-only, missing or ill-typed constructor keys."""
    target = cls.__init__ if inspect.isclass(cls) else cls
    signature = inspect.signature(target)
    params = {n: p for n, p in signature.parameters.items()
              if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to no type checks
        hints = {}
    accepted = [n for n in params if n not in injected]
    for key, value in kwargs.items():
        if key in injected:
            raise ConfigError(f"{where}: key {key!r} is set by the builder and must not appear in the config")
        if key not in params:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, accepted)} (accepted keys: {', '.join(accepted)})")
        annotation = hints.get(key, inspect.Parameter.empty)
        if not check_type(value, annotation):
            raise ConfigError(f"{where}: key {key!r} = {value!r} has the wrong type (expected {_describe(annotation)})")
    for name, p in params.items():
        if p.default is p.empty and name not in kwargs and name not in injected:
            raise ConfigError(f"{where}: missing required key {name!r}")


ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
LOSSES = Registry("loss")
POSTPROCESSORS = Registry("postprocess")
METRICS = Registry("metric")
LABEL_ENCODERS = Registry("label encoder")
