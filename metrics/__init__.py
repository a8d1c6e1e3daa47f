"""Evaluation metrics (generative and restoration)."""
