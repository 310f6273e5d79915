"""The RAVEn / EMU-2 XML API without I/O: framing, decoding, command encoding, typed values."""

from ravend.protocol.commands import encode_command
from ravend.protocol.decoder import StreamDecoder, decode
from ravend.protocol.framer import Framer, RawFragment
from ravend.protocol.model import DecodeError, Discarded, Kind, Reading
from ravend.protocol.readings import readings_from

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
