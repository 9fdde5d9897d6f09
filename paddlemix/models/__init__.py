"""Model definitions. Each model lives in its own sub-package and is imported explicitly."""
