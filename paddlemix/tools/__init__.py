"""Command-line entry points (``python -m paddlemix.tools.<name>``)."""
