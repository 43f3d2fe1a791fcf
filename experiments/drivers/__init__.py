"""Load drivers: the load generator side of a measurement, behind one interface (interface.py)."""
