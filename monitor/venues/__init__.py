"""Venue adapters: one module per venue, behind the interface in `base`."""
