"""Benchmarks for arkiv.

``python -m bench.ingest`` measures C-STORE ingest throughput of arkiv against Orthanc
using a synthetic dental data set (see ``docs/PERFORMANCE.md``).
"""
