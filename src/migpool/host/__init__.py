"""This machine's state: where it lives, files opened safely, locks, partition leases, the journal, device files."""
