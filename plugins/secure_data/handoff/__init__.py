"""Envelope encryption, package format, signed manifest, decrypt context manager. No Airflow imports."""
