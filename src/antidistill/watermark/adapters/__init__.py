"""Framework adapters (transformers LogitsProcessors). Imported on demand: they pull in torch."""
