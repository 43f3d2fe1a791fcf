"""CLI subcommands of the clients stage (``poochlab predict``)."""
