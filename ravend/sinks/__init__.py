"""Where readings go: one module per store, all behind the contract in base.py."""
