"""One batch client per provider, for economy mode."""
