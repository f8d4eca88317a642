"""Model analysis: theoretical and effective receptive field (``receptive_field``) and the model report
(``report``: params, GMACs, output stride, receptive field) behind ``segbench models``, and the speed comparisons
against reference implementations (``baselines``) behind ``segbench speed``."""
