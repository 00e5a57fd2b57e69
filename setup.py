"""The C extension (src/otelflow/_native.c); everything else is in pyproject.toml. Building it
needs a C compiler and Python's headers."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("otelflow._native", sources=["src/otelflow/_native.c"])])
