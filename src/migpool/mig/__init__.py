"""The MIG model: the GPU catalog and its data, what users ask for (layouts), and where it goes (the planner)."""
