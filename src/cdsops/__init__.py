"""cdsops: registration rows in, user, group and access state out."""

__version__ = "0.1.0"
