"""Test helpers for otelflow users and for otelflow's own tests (also a pytest plugin)."""
