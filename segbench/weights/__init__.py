"""Weights: the typed model.json (``meta``), the local store, the demo pack."""
