"""Telemetry: OpenTelemetry setup, the store span exporter, pricing and usage ingestion.

Import the submodules you need; this package imports nothing heavy itself.
"""
