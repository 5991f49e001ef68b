"""Reads of the risk models: versions, runs, scores for the chart, features by site."""
