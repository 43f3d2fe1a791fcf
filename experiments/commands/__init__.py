"""`poochlab` subcommands of the experiments stage."""
