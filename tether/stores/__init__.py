"""Event stores: where session logs live. ``memory`` is the default (one process only)."""
