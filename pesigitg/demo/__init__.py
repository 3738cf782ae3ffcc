"""The end-to-end demo: real QUIC through pesigitgd in throwaway namespaces."""
