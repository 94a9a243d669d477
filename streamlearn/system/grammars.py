"""Two small synthetic grammars of text, written in code: the text demo's two domains.

`animals`: plain English-like sentences about animals ("the small fox chases a grey
hare near the river."). `code`: arithmetic and code-like lines ("let total = b * 7 + 3;").
Their bytes hardly overlap (letters and spaces against digits, operators and brackets),
so a byte-level language model that learns one and then the other visibly forgets the
first. Each text is a few sentences or statements, generated from a seeded random stream:
the same seed gives the same texts, nothing is downloaded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

ANIMALS, CODE = "animals", "code"
DOMAINS = (ANIMALS, CODE)
MAX_TEXT_BYTES = 160  # the longest text either grammar writes (units are cut to fit)
UNITS = (1, 3)  # sentences or statements per text, inclusive

_ADJECTIVES = ("small", "old", "brown", "quick", "grey", "young", "lazy", "wild")
_ANIMALS = ("fox", "cat", "dog", "hare", "owl", "horse", "mouse", "bear", "duck", "wolf")
_VERBS = ("chases", "sees", "follows", "watches", "meets", "hears", "finds")
_MOVES = ("runs", "sleeps", "hides", "sits", "waits", "plays")
_PLACES = ("river", "hill", "barn", "forest", "field", "garden", "pond")
_PREPOSITIONS = ("near", "behind", "under", "beside", "across")
_VARIABLES = ("x", "y", "n", "total", "count", "a", "b", "i")
_OPERATORS = ("+", "-", "*", "/", "%")
_COMPARISONS = ("<", ">", "==", "!=", "<=")
_FUNCTIONS = ("max", "min", "sum", "abs", "len")


def _noun(rng: random.Random) -> str:
    article = rng.choice(("the", "a"))
    adjective = rng.choice(_ADJECTIVES) + " " if rng.random() < 0.6 else ""
    return f"{article} {adjective}{rng.choice(_ANIMALS)}"


def _sentence(rng: random.Random) -> str:
    """One sentence: an animal acts on another, or moves somewhere."""
    place = f"{rng.choice(_PREPOSITIONS)} the {rng.choice(_PLACES)}"
    if rng.random() < 0.5:
        return f"{_noun(rng)} {rng.choice(_VERBS)} {_noun(rng)} {place}."
    return f"{_noun(rng)} {rng.choice(_MOVES)} {place}."


def _operand(rng: random.Random) -> str:
    return str(rng.randint(0, 99)) if rng.random() < 0.5 else rng.choice(_VARIABLES)


def _expression(rng: random.Random) -> str:
    terms = [_operand(rng) for _ in range(rng.randint(2, 3))]
    ops = [rng.choice(_OPERATORS) for _ in terms[1:]]
    return terms[0] + "".join(f" {op} {term}" for op, term in zip(ops, terms[1:], strict=True))


def _statement(rng: random.Random) -> str:
    """One statement: an assignment, a condition or a call."""
    name, kind = rng.choice(_VARIABLES), rng.random()
    if kind < 0.5:
        return f"let {name} = {_expression(rng)};"
    if kind < 0.8:
        test = f"{name} {rng.choice(_COMPARISONS)} {rng.randint(0, 99)}"
        return f"if ({test}) {{ {name} = {_expression(rng)}; }}"
    return f"print({rng.choice(_FUNCTIONS)}({_operand(rng)}, {_operand(rng)}));"


_UNIT: dict[str, Callable[[random.Random], str]] = {ANIMALS: _sentence, CODE: _statement}


def text(domain: str, rng: random.Random) -> str:
    """One text of `domain`: 1 to 3 units joined by spaces, at most MAX_TEXT_BYTES bytes.

    Raises:
        KeyError: an unknown domain.

    """
    unit = _UNIT[domain]
    parts = [unit(rng) for _ in range(rng.randint(*UNITS))]
    kept = [parts[0]]
    for part in parts[1:]:  # whole units only: a cut sentence would teach a wrong ending
        if len(" ".join([*kept, part]).encode()) > MAX_TEXT_BYTES:
            break
        kept.append(part)
    return " ".join(kept)


@dataclass(frozen=True)
class TwoDomains:
    """Texts of the first domain for `switch_after` texts, then of the second, forever."""

    first: str = ANIMALS
    second: str = CODE
    switch_after: int = 1000
    seed: int = 0

    def domain_at(self, index: int) -> str:
        """The domain of the `index`-th text (from 0)."""
        return self.first if index < self.switch_after else self.second

    def texts(self) -> Iterator[tuple[str, str]]:
        """(domain, text) pairs, the same for the same seed."""
        rng = random.Random(self.seed)
        index = 0
        while True:
            domain = self.domain_at(index)
            yield domain, text(domain, rng)
            index += 1


# A prompt per domain whose continuation shows what the served model knows of each.
PROMPTS = {ANIMALS: "the small ", CODE: "let x = "}
