"""Micro-benchmarks behind ``poochlab bench <target>``: one module per target.

Each target module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and is imported
only when its target runs.
"""
