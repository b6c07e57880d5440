"""Text sampling for synthetic data: English words by (tempered) frequency, case variants, random
alphanumeric and punctuation strings, numbers; lengths 1..max_len, always inside the charset."""
from __future__ import annotations

import random
import string

import numpy as np

__all__ = ["TextSampler"]

_PUNCT_WRAP = [("(", ")"), ('"', '"'), ("'", "'"), ("[", "]")]
_PUNCT_END = list(".,!?:;") + ["'s", "...", "-"]


class TextSampler:
    """``sample(rng)`` -> str. ``mix``: weights of words, random alphanumerics, numbers, punctuated
    words and random printable strings. ``case_weights``: (lower, Capitalized, UPPER) for words.
    ``temperature`` flattens word frequencies (1: true frequencies, so short common words dominate;
    0: uniform over the vocabulary, so long rare words dominate). ``max_random_len`` bounds the
    random strings."""

    def __init__(self, characters: str, max_len: int = 25, vocab_size: int = 50000, temperature: float = 0.5,
                 mix: tuple[float, float, float, float, float] = (0.6, 0.15, 0.1, 0.1, 0.05),
                 case_weights: tuple[float, float, float] = (0.55, 0.25, 0.2), max_random_len: int = 12):
        self.chars = characters
        self.charset = set(characters)
        self.max_len = max_len
        words, weights = self._load_words(vocab_size)
        keep = [i for i, w in enumerate(words) if w and set(w) <= self.charset and len(w) <= max_len]
        self.words = [words[i] for i in keep]
        p = np.asarray([weights[i] for i in keep], dtype=np.float64) ** temperature
        self.cum_weights = np.cumsum(p / p.sum()).tolist()
        self.mix = (np.cumsum(mix) / sum(mix)).tolist()
        _, capitalized, upper = (w / sum(case_weights) for w in case_weights)
        self.case_thresholds = (capitalized, capitalized + upper)
        self.max_random_len = max_random_len
        self.alnum = "".join(c for c in string.ascii_letters + string.digits if c in self.charset)
        self.printable = "".join(c for c in characters if not c.isspace())
        self.digits = "".join(c for c in string.digits if c in self.charset)

    @staticmethod
    def _load_words(vocab_size: int) -> tuple[list[str], list[float]]:
        try:
            from wordfreq import top_n_list, word_frequency
            words = top_n_list("en", vocab_size)
            return words, [max(word_frequency(w, "en"), 1e-9) for w in words]
        except ImportError:  # a small built-in fallback keeps the engine usable without wordfreq
            words = ("the of and to in is you that it he was for on are as with his they at be this have from or one "
                     "had by word but not what all were we when your can said there use an each which she do how their "
                     "if will up other about out many then them these so some her would make like him into time has look "
                     "two more write go see number no way could people my than first water been call who oil its now find "
                     "long down day did get come made may part over new sound take only little work know place year live "
                     "me back give most very after thing our just name good sentence man think say great where help "
                     "through much before line right too mean old any same tell boy follow came want show also around "
                     "form three small set put end does another well large must big even such because turn here why ask "
                     "went men read need land different home us move try kind hand picture again change off play spell "
                     "air away animal house point page letter mother answer found study still learn should america world").split()
            return words, [1.0 / (i + 10) for i in range(len(words))]

    def word(self, rng: random.Random) -> str:
        w = self.words[min(self._bisect(rng.random()), len(self.words) - 1)]
        r = rng.random()
        if r < self.case_thresholds[0]:
            w = w.capitalize()
        elif r < self.case_thresholds[1]:
            w = w.upper()
        return w

    def _bisect(self, x: float) -> int:
        import bisect
        return bisect.bisect_left(self.cum_weights, x)

    def number(self, rng: random.Random) -> str:
        kind = rng.random()
        if kind < 0.4:
            s = str(rng.randint(0, 10 ** rng.randint(1, 6)))
        elif kind < 0.6:
            s = f"{rng.uniform(0, 1000):.{rng.randint(1, 2)}f}"
        elif kind < 0.75:
            s = f"${rng.randint(0, 999)}.{rng.randint(0, 99):02d}"
        elif kind < 0.9:
            s = f"{rng.randint(1, 31):02d}/{rng.randint(1, 12):02d}/{rng.randint(1950, 2030)}"
        else:
            s = "-".join(str(rng.randint(100, 9999)) for _ in range(rng.randint(2, 3)))
        return "".join(c for c in s if c in self.charset) or rng.choice(self.digits or self.printable)

    def sample(self, rng: random.Random) -> str:
        r = rng.random()
        if r < self.mix[0]:
            text = self.word(rng)
        elif r < self.mix[1]:
            text = "".join(rng.choice(self.alnum) for _ in range(rng.randint(1, self.max_random_len)))
        elif r < self.mix[2]:
            text = self.number(rng)
        elif r < self.mix[3]:
            text = self.word(rng)
            if rng.random() < 0.5:
                left, right = rng.choice(_PUNCT_WRAP)
                text = left + text + right
            else:
                text = text + rng.choice(_PUNCT_END)
            text = "".join(c for c in text if c in self.charset)
        else:
            text = "".join(rng.choice(self.printable) for _ in range(rng.randint(1, min(10, self.max_random_len))))
        return text[: self.max_len] or rng.choice(self.alnum or self.printable)
