"""otelflow: an OpenTelemetry-Collector-style streaming pipeline."""

__version__ = "0.1.0"
