"""Suggestions for refusals: the known name closest to a misspelt one ("heigth" -> "height").

Light (difflib only), so the CLI's job verbs and ``cluster.jobs`` can use it without importing torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

SHOWN = 60
"""Characters of a value a refusal quotes: it says what was sent, not 5,000 characters of it."""


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely misspells: one that differs only in case, else difflib's closest match
    (ratio >= 0.6); None when nothing is close."""
    choices = sorted(choices)
    same = [c for c in choices if c.lower() == word.lower()]
    if same:
        return same[0]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def shown(value: Any) -> str:
    """``repr(value)``, shortened to about ``SHOWN`` characters (control characters stay escaped: one line)."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[: SHOWN - 15]}... ({len(text)} chars)"
