"""Two model versions under one name for an A/B test, laid out the way TF Serving loads them.

A per-run base path holds numbered version folders linked to each variant's latest export
(``1`` -> the stable variant, ``2`` -> the canary variant); the model config serves exactly
those versions (a ``specific`` version policy) and labels them ``stable`` and ``canary``, so a
request pins its arm with ``/labels/<label>`` (REST) or ``model_spec.version_label`` (gRPC).
"""

from __future__ import annotations

from pathlib import Path

STABLE_VERSION, CANARY_VERSION = 1, 2
LABELS = {"stable": STABLE_VERSION, "canary": CANARY_VERSION}


def latest_version_dir(base: Path) -> Path:
    """The highest version folder (with a saved_model.pb) of a model's base path."""
    from poochlab.models import export

    found = export.latest_version_dir(base.parent, base.name)
    if found is None:
        raise FileNotFoundError(f"{base}: no numbered version folder with a saved_model.pb")
    return found


def link_versions(directory: Path, stable_base: Path, canary_base: Path) -> Path:
    """``directory`` as a base path: ``1`` -> stable's latest export, ``2`` -> canary's (symlinks,
    replaced when they exist)."""
    directory.mkdir(parents=True, exist_ok=True)
    for version, base in ((STABLE_VERSION, stable_base), (CANARY_VERSION, canary_base)):
        link = directory / str(version)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(latest_version_dir(base).resolve(), target_is_directory=True)
    return directory


def ab_models_config_text(model_name: str, base_path: Path) -> str:
    """A ModelServerConfig serving versions 1 and 2 of ``base_path`` with their labels."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = str(base_path)
    model.model_platform = "tensorflow"
    model.model_version_policy.specific.versions.extend(sorted(LABELS.values()))
    for label, version in LABELS.items():
        model.version_labels[label] = version
    return text_format.MessageToString(config)
