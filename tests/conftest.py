"""Shared, session-scoped fixtures: one Redis, one trained export, one lab server per run.

Each fixture lives in its own module under tests/fixtures/ so its owner can change it alone.
"""

pytest_plugins = [
    "fixtures.redis_server",
    "fixtures.pooch_export",
    "fixtures.lab_server",
    "fixtures.tfs_models",
    "fixtures.tfs_protos",
]
