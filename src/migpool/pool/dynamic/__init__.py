"""Dynamic MIG: the site that owns partitions, sizes learned from run times, the policy and its controller."""
