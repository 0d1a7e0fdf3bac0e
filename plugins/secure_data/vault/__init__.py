"""Vault access for secure-data."""
