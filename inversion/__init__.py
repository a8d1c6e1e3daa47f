"""Restoration by GAN inversion."""
