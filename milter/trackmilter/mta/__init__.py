"""The pymilter callback layer and the daemon that runs it."""
