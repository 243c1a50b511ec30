"""Read models: each projection builds its read tables from the event store, exactly once."""
