"""Receivers: where data enters the collector."""
