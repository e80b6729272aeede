"""Rubrics: what matters in a shoot of each kind, and its star scale (TOML files)."""
