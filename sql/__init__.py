"""Schema migrations, shipped inside the package as ``ravend.sql`` (see setup.py)."""
