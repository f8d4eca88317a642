"""segbench: train, evaluate and compare the classic image-segmentation models under one protocol."""

__version__ = "0.1.0"
