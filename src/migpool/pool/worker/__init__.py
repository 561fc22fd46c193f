"""The worker process (`python -m migpool.pool.worker`), the plugin chain, plugin contexts, torch.distributed."""
