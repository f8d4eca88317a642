"""Pictures: colour masks and overlays (``masks``), instance drawings (``instances``)."""
