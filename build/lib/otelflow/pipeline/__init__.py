"""Graph build, fan-out, the exporter queue/retry chain and the service lifecycle."""
