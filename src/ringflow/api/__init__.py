"""The Exotel-compatible HTTP edge and the admin JSON API."""
