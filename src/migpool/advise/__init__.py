"""migpool advise: the best static MIG layout for the work a machine ran (the event model and its search), the
workload record read back, and the answer `migpool advise` prints."""
