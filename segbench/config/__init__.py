"""Run configs: the flat RunConfig (``run``), the type and range of every key (``rules``), safe YAML (``safe_yaml``),
and the settings objects the engine and the Predictor take (``settings``)."""
