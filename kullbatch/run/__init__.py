"""Running jobs: the runtime, the fast engine, the economy runner, retries and gates."""
