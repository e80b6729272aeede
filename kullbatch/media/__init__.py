"""Photos: bytes to send (orientation, size, RAW previews), fingerprints, bursts."""
