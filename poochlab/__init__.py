"""Pooch Predictor latency lab.

The stages live in top-level folders and import as ``poochlab.<stage>``:
models -> serving -> clients -> experiments (load, recording, sweep, analysis).
"""

__version__ = "0.1.0"
