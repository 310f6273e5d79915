"""ravend: a dependable energy logger for Rainforest RAVEn and EMU-2 meter sticks."""

from ravend._version import __version__

__all__ = ["__version__"]
