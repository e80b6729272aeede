"""SQLite: schema and migrations, jobs, items, provider batches."""
