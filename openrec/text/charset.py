"""Character dictionaries and the token layouts of the CTC and SMTR heads."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..config import ConfigError

__all__ = ["Charset", "build_charset", "charset_from_config", "BUILTIN_DICTS"]

_DICT_DIR = os.path.join(os.path.dirname(__file__), "dicts")
BUILTIN_DICTS = {"en_symbols": os.path.join(_DICT_DIR, "en_symbols.txt")}


@dataclass(frozen=True)
class Charset:
    """An ordered set of characters plus the label length limit.

    CTC classes: ``0`` blank, ``1..N`` characters. SMTR tokens: ``0`` EOS, ``1..N`` characters,
    then BOS, INF (left context pad), INB (right context pad), PAD; SMTR predicts EOS, chars, BOS.
    """

    characters: tuple[str, ...]
    max_text_length: int = 25
    index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if len(set(self.characters)) != len(self.characters):
            dup = sorted({c for c in self.characters if self.characters.count(c) > 1})
            raise ConfigError(f"character dictionary has duplicate entries: {dup}")
        object.__setattr__(self, "index", {c: i for i, c in enumerate(self.characters)})

    def __len__(self) -> int:
        return len(self.characters)

    # CTC layout
    @property
    def num_ctc_classes(self) -> int:
        return len(self) + 1

    # SMTR layout
    @property
    def smtr_eos(self) -> int:
        return 0

    @property
    def smtr_bos(self) -> int:
        return len(self) + 1

    @property
    def smtr_inf(self) -> int:
        return len(self) + 2

    @property
    def smtr_inb(self) -> int:
        return len(self) + 3

    @property
    def smtr_pad(self) -> int:
        return len(self) + 4

    @property
    def num_smtr_tokens(self) -> int:
        return len(self) + 5

    @property
    def num_smtr_classes(self) -> int:
        return len(self) + 2


def build_charset(character_dict_path: str | None = None, use_space_char: bool = False, max_text_length: int = 25) -> Charset:
    """Read a dictionary (one character per line; ``None`` or ``en_symbols`` = the built-in 94 symbols)."""
    path = BUILTIN_DICTS.get(character_dict_path or "en_symbols", character_dict_path)
    if not os.path.isfile(path):
        raise ConfigError(f"Global.character_dict_path: file not found: {character_dict_path}")
    with open(path, encoding="utf-8") as f:
        chars = [line.rstrip("\r\n") for line in f]
    chars = [c for c in chars if c != ""]
    bad = [c for c in chars if len(c) != 1]
    if bad:
        raise ConfigError(f"Global.character_dict_path {path}: each line must hold one character, got {bad[:5]}")
    if use_space_char and " " not in chars:
        chars.append(" ")
    if not isinstance(max_text_length, int) or max_text_length < 1:
        raise ConfigError(f"Global.max_text_length must be a positive integer, got {max_text_length!r}")
    return Charset(tuple(chars), max_text_length)


def charset_from_config(config: dict) -> Charset:
    """The charset a full config describes in its ``Global`` section (defaults where keys are absent)."""
    g = config.get("Global") or {}
    return build_charset(g.get("character_dict_path"), g.get("use_space_char", False), g.get("max_text_length", 25))
