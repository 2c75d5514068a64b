"""Fine-tuning recipes and demos, one module per family (registered from zoo/catalog/<family>.py)."""
