"""The tracker: the HTTP service answering tracking links and the open pixel."""
