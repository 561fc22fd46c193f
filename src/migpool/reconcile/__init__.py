"""Applying layouts: plan and apply (checks first, minimal changes, rollback), the driver operations they are
made of, the layout saved for reboots and the boot service."""
