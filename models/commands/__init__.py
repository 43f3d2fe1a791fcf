"""``poochlab train`` and ``poochlab export``: the model stage's subcommands."""
