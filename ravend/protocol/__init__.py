"""The RAVEn / EMU-2 XML API without I/O: framing, decoding, command encoding, typed values.

The names below are imported from their modules on first use (PEP 562), not when the package is
imported: every ``ravend.protocol.model`` import goes through this package, and the decoder
behind ``decode`` costs more to import than most of a ``ravenctl status`` run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ravend.protocol.commands import encode_command
    from ravend.protocol.decoder import StreamDecoder, decode
    from ravend.protocol.framer import Framer, RawFragment
    from ravend.protocol.model import DecodeError, Discarded, Kind, Reading
    from ravend.protocol.readings import readings_from

#: Each name this package offers, and the module that defines it.
_HOMES = {
    "encode_command": "commands",
    "StreamDecoder": "decoder",
    "decode": "decoder",
    "readings_from": "readings",
    "Framer": "framer",
    "RawFragment": "framer",
    "DecodeError": "model",
    "Discarded": "model",
    "Kind": "model",
    "Reading": "model",
}

__all__ = [
    "DecodeError",
    "Discarded",
    "Framer",
    "Kind",
    "RawFragment",
    "Reading",
    "StreamDecoder",
    "decode",
    "encode_command",
    "readings_from",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value
