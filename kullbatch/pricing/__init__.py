"""The dated price table and each provider's image-token rules."""
