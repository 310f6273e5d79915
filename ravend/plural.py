"""Counts in user-facing text: "1 reading", "2 readings", never "1 readings"."""

from __future__ import annotations


def plural(n: int, word: str, words: str | None = None, *, width: int = 0) -> str:
    """n and the noun in the number n calls for; words: the plural when it is not word + "s";
    width: the number right-aligned in that many columns (tables)."""
    return f"{n:>{width}} {word if n == 1 else (words or word + 's')}"
