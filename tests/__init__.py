"""The test suite as a package, so shared helper modules (the NumPy Qwen-VL reference, the training and serving runners) are imported by their full names."""
