"""The one version source: setup.py and debian/changelog follow it."""

__version__ = "0.3.0"
