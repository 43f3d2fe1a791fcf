"""TF Serving's own generated protos, imported without importing TensorFlow.

``tensorflow_serving.apis.predict_pb2`` imports ``tensorflow.core.framework.tensor_pb2``, and
importing any ``tensorflow.*`` module runs ``tensorflow/__init__.py``: all of TensorFlow,
about 7 s and 600 MB, in every load-generator process that only needs to build messages.
While the protos load, the ``tensorflow`` packages on their import path are created as empty
namespace-like modules (their ``__init__`` is not run); the generated ``*_pb2`` modules
themselves are the real ones. The empty packages are removed again afterwards, so a later
``import tensorflow`` in the same process works as usual and sees the same message classes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

_MODULES = (
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.classification_pb2",
    "tensorflow_serving.apis.regression_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "tensorflow_serving.apis.model_service_pb2_grpc",
)


class _EmptyTensorFlowPackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``tensorflow`` and its sub-packages as empty packages; leaves modules alone."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow" and not name.startswith("tensorflow."):
            return None
        folder = self.root.joinpath(*name.split(".")[1:])
        if not folder.is_dir():
            return None  # a real module (e.g. tensor_pb2): the normal finders load it
        spec = importlib.machinery.ModuleSpec(name, self, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = list(spec.submodule_search_locations or [])
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def load() -> types.SimpleNamespace:
    """The TF Serving API modules, by short name (``protos.predict_pb2``, ...)."""
    if "tensorflow" not in sys.modules:
        spec = importlib.util.find_spec("tensorflow")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("tensorflow is not installed: tensorflow-serving-api's protos live in it")
        finder = _EmptyTensorFlowPackages(Path(list(spec.submodule_search_locations)[0]))
        sys.meta_path.insert(0, finder)
        try:
            modules = [importlib.import_module(name) for name in _MODULES]
        finally:
            sys.meta_path.remove(finder)
            for name in [n for n, m in sys.modules.items()
                         if getattr(getattr(m, "__spec__", None), "loader", None) is finder]:
                del sys.modules[name]
    else:
        modules = [importlib.import_module(name) for name in _MODULES]
    return types.SimpleNamespace(**{name.rsplit(".", 1)[1]: module for name, module in zip(_MODULES, modules)})
