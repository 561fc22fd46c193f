"""The pool-wide collections: their state (one per pool) and the proxies tasks call."""
