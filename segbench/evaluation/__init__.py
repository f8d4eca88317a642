"""Scoring: the confusion-matrix metrics, bootstrap CIs and ranks, COCO AP, efficiency (GMACs, latency)."""
