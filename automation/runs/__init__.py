"""Runs: creating and queueing them (one queue per organization), executing them (alone and in\nbatches), runs by hand and retries, the sweeper and retention."""
