"""Model size as a knob: the ``small`` and ``large`` Pooch Predictor variants.

Both share the serving signature and the wide-and-deep shape (see :mod:`network`); they differ
in embedding widths and in the deep tower. ``large`` carries ~9 M weights in its deep tower, so
a batch-1 call must read ~35 MB of weights and costs several times what ``small`` costs: that
is the difference experiments use to ask when a cache or batching pays off. Training stays
fast because ``large`` sees the data once (one epoch) while its wide part, which learns quickly,
carries most of the signal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class VariantSpec:
    name: str
    hashtag_dim: int  # width of the hashed-hashtag embedding fed to the deep tower
    country_dim: int
    deep_widths: tuple[int, ...]  # hidden layer widths of the deep tower
    epochs: int
    batch_size: int
    wide_learning_rate: float
    deep_learning_rate: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


VARIANTS: dict[str, VariantSpec] = {
    "small": VariantSpec(
        name="small",
        hashtag_dim=8,
        country_dim=4,
        deep_widths=(32,),
        epochs=6,
        batch_size=256,
        wide_learning_rate=0.05,
        deep_learning_rate=0.005,
    ),
    "large": VariantSpec(
        name="large",
        hashtag_dim=64,
        country_dim=16,
        deep_widths=(2048, 2048, 2048),
        epochs=1,
        batch_size=128,
        wide_learning_rate=0.05,
        deep_learning_rate=0.0003,
    ),
}


def variant_spec(name: str) -> VariantSpec:
    """The spec of variant ``name``; ``ValueError`` naming the known variants otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model variant {name!r} (known: {', '.join(VARIANTS)})") from None
