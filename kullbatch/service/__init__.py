"""What a command does: create, run, resume, cancel, report, cull, estimate."""
