"""Helpers for tests, benchmarks and the demo (not used by the daemon): throwaway
network namespaces and the real daemon run as a subprocess."""
