"""Serving a checkpoint over HTTP: OpenAI-style chat completions that also return boxes, and a web page."""
