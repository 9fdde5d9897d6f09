"""Med-GRIT loading and validation, and batch collation for training."""
