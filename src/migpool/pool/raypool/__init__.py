"""A pool over a Ray cluster: one Ray actor per partition behind migpool's own scheduler."""
