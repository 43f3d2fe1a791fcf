"""clients stage of the Pooch Predictor latency lab."""
