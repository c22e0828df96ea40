"""Venue adapters: one module per venue, registered in `registry` behind the interface in `base`."""
