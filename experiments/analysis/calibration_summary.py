"""What load the rig could drive: the run's calibration (``manifest.json``'s ``calibration``),
as one sentence naming what set the limit and a table of everything measured."""

from __future__ import annotations

from typing import Any

import pandas as pd

from poochlab.experiments.analysis.number_format import format_number


def calibration_sentence(manifest: dict[str, Any]) -> str | None:
    """E.g. "Load levels are fractions of 1,850 req/s, set by generator grpc-...: light 462, high
    1,572 req/s." None when the run was not calibrated."""
    calibration = manifest.get("calibration")
    if not calibration or not calibration.get("capacity_rps"):
        return None
    capacity = float(calibration["capacity_rps"])
    levels = calibration.get("levels") or {}
    rates = ", ".join(f"{name} {format_number(fraction * capacity)} req/s ({fraction:.0%})"
                      for name, fraction in sorted(levels.items(), key=lambda kv: kv[1]))
    what = calibration.get("limited_by") or f"the reference configuration ({calibration.get('reference', '?')})"
    text = (f"The highest load this machine could drive validly was {format_number(capacity)} req/s, "
            f"set by {what}")
    return text + (f"; load levels: {rates}." if rates else ".")


def calibration_table(manifest: dict[str, Any]) -> pd.DataFrame | None:
    """One row per measurement: each server configuration's capacity and each client path's limit."""
    calibration = manifest.get("calibration")
    if not calibration:
        return None
    rows = []
    for server in calibration.get("servers") or ():
        rows.append({"what": f"server: {server['configuration']}",
                     "req/s": format_number(float(server["capacity_rps"])),
                     "how": "closed-loop capacity (best valid step)" + ("" if server.get("valid", True)
                                                                         else "; no step was valid")})
    for path in calibration.get("generator_paths") or ():
        bounded = path.get("bounded", True)
        rows.append({"what": f"generator path: {path['path']}",
                     "req/s": ("≥ " if not bounded else "") + format_number(float(path["limit_rps"])),
                     "how": ("highest valid open-loop rate against the echo server" if bounded
                             else "valid at the highest rate the sweep needs")})
    return pd.DataFrame(rows) if rows else None
