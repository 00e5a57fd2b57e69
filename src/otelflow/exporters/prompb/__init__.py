"""Prometheus remote-write 1.0 protobuf messages (source .proto files and generated modules)."""
