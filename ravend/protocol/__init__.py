"""The RAVEn / EMU-2 XML API without I/O: framing, decoding, command encoding, typed values."""

from ravend.protocol.commands import encode_command
from ravend.protocol.decoder import StreamDecoder, decode, readings_from
from ravend.protocol.framer import Framer, RawFragment
from ravend.protocol.model import DecodeError, Discarded, Kind, Reading

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
