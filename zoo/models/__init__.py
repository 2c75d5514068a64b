"""One self-contained folder per family (only torch, transformers and relative imports inside)."""
