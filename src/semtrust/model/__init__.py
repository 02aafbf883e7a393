"""Modeling: coefficient functions, the TMA, model files and signed models."""
