"""The C extensions; everything else is in pyproject.toml.

`otelflow._native` (src/otelflow/_native.c) needs a C compiler and Python's headers.
`otelflow._redact` (src/otelflow/_redact.cpp) also needs a C++ compiler and RE2's headers and
library (Debian: `g++ libre2-dev`); without them it is skipped with a warning and the
redaction processor masks values in Python instead (same output, lower throughput).
`otelflow._h2` (src/otelflow/_h2.c) needs nghttp2's headers and library (Debian:
`libnghttp2-dev`); without them it is skipped with a warning and the OTLP receiver serves gRPC
with grpc.aio instead (same behaviour, a higher cost per request).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("otelflow._native", sources=["src/otelflow/_native.c"]),
    Extension("otelflow._redact", sources=["src/otelflow/_redact.cpp"], language="c++",
              libraries=["re2"], extra_compile_args=["-std=c++17"], optional=True),
    Extension("otelflow._h2", sources=["src/otelflow/_h2.c"], libraries=["nghttp2"],
              optional=True),
])
