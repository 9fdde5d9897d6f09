"""Turning images and conversations into model inputs: image transform, ChatML rendering, labels."""
