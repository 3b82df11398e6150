"""A character-level CLIP vocabulary built in memory.

The built-in models have no hub to fetch a tokenizer from, so their CLIP tokenizer uses a vocabulary
of the 256 byte-level symbols (each also in its end-of-word form) and no merges: every prompt
tokenizes to its characters. Small, deterministic, and enough for a text encoder trained here.
"""

from __future__ import annotations

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def character_vocab() -> dict[str, int]:
    """Token -> id for the character vocabulary (514 entries)."""
    tokens = byte_symbols() + [s + "</w>" for s in byte_symbols()] + [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}
