"""Networks, datasets, losses and training loops."""
