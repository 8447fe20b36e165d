"""Agent adapters: one module per CLI protocol."""
