"""Command-line entry points; each module parses arguments and calls the service code."""
