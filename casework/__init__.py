"""Shared core of the casework engine: settings, tables, contracts, rule sets, calendar, CLI."""
