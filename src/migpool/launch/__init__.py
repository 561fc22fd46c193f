"""`migpool run`: any program, one copy per partition, or a queue of commands run as partitions come free."""
