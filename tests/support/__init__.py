"""Test support code (real namespaces and processes, no mocks)."""
