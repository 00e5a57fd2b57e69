"""Prometheus remote-write 1.0 protobuf messages: the .proto sources (written from the
remote-write 1.0 spec) and the modules generated from them, committed.

Regenerate from `src/` after editing a .proto (grpcio-tools >= 1.85 emits code for the
protobuf 7.x runtime):

    python -m grpc_tools.protoc -I. --python_out=. \
        otelflow/exporters/prompb/types.proto otelflow/exporters/prompb/remote.proto
"""
