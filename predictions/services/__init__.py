"""Writes of the risk models: versions and the champion, training runs, scores."""
