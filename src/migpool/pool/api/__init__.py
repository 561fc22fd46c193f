"""What users write: tasks and `@function`, providers and `Worker`, `Image`, `put`'s refs, `shard`, `instance_info`."""
