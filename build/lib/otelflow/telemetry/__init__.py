"""The collector's own telemetry: Prometheus self-metrics and structured logs."""
