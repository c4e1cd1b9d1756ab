"""Runs on disk, the experiment index and reports."""
