"""The parent side of the workers: the queue, job packing, one slot per worker, owned threads."""
