"""``poochlab serve``: registered with the CLI; the server parses TF Serving flags itself."""
