"""Which TransformerLens model classes this install has: the one place that imports them.

TransformerLens 4.0 removed `HookedTransformer`, `HookedTransformerConfig` and the
`transformer_lens.components` tree; `TransformerBridge` is its only model class. Every module of
this package imports the legacy names from here, so `import circuit_transfer` works on TL 3.9 and
on TL 4.x alike. Where a legacy class is missing its name is bound to a stand-in: `isinstance`
against it is always False (no object is a HookedTransformer there), and constructing it or
reading any attribute of it raises `HookedTransformerUnavailable`, which says what to do.
"""

from __future__ import annotations

from typing import Any

import transformer_lens
from transformer_lens import ActivationCache
from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "HAS_HOOKED",
    "AbstractAttention",
    "ActivationCache",
    "HookedTransformer",
    "HookedTransformerConfig",
    "HookedTransformerUnavailable",
    "LayerNorm",
    "Model",
    "TransformerBridge",
    "LayerNormPre",
    "RMSNorm",
    "RMSNormPre",
    "get_pretrained_model_config",
    "get_pretrained_state_dict",
    "default_backend",
    "official_model_name",
    "require_hooked",
    "tl_version",
]


def tl_version() -> str:
    """The installed TransformerLens version, as its distribution metadata says."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-lens")
    except PackageNotFoundError:
        return getattr(transformer_lens, "__version__", "unknown")


class HookedTransformerUnavailable(ImportError):
    """Raised by anything that needs `HookedTransformer` on a TransformerLens without it (4.x)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs TransformerLens 3.x (HookedTransformer), but TransformerLens {tl_version()} "
            "is installed, which removed it. Use backend='bridge' (TransformerBridge), or install "
            "'transformer-lens>=3.9,<4' for the hooked backend."
        )


class _Missing(type):
    """Metaclass of the stand-ins: no instances, every public attribute raises the clear error."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise HookedTransformerUnavailable(cls.__name__)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):  # keep introspection (typing, beartype, hasattr) working
            raise AttributeError(name)
        raise HookedTransformerUnavailable(f"{cls.__name__}.{name}")


def _stand_in(name: str) -> type:
    return _Missing(name, (), {"__module__": __name__, "__doc__": f"Stand-in: {name} is not in this TL."})


try:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre
    from transformer_lens.components.abstract_attention import AbstractAttention
    from transformer_lens.loading_from_pretrained import (
        get_pretrained_model_config,
        get_pretrained_state_dict,
    )

    HAS_HOOKED = True
except ImportError:
    HAS_HOOKED = False
    HookedTransformer = _stand_in("HookedTransformer")  # type: ignore[misc,assignment]
    HookedTransformerConfig = _stand_in("HookedTransformerConfig")  # type: ignore[misc,assignment]
    LayerNorm = _stand_in("LayerNorm")  # type: ignore[misc,assignment]
    LayerNormPre = _stand_in("LayerNormPre")  # type: ignore[misc,assignment]
    RMSNorm = _stand_in("RMSNorm")  # type: ignore[misc,assignment]
    RMSNormPre = _stand_in("RMSNormPre")  # type: ignore[misc,assignment]
    AbstractAttention = _stand_in("AbstractAttention")  # type: ignore[misc,assignment]
    get_pretrained_model_config = _stand_in("get_pretrained_model_config")  # type: ignore[assignment]
    get_pretrained_state_dict = _stand_in("get_pretrained_state_dict")  # type: ignore[assignment]


Model = HookedTransformer | TransformerBridge
"""A model of either backend: what every backend-independent function takes."""


def require_hooked(what: str) -> None:
    """Raise `HookedTransformerUnavailable` naming `what` unless this TL has `HookedTransformer`."""
    if not HAS_HOOKED:
        raise HookedTransformerUnavailable(what)


def default_backend() -> str:
    """ "hooked" where this TransformerLens has HookedTransformer (3.x), else "bridge" (4.x)."""
    return "hooked" if HAS_HOOKED else "bridge"


def official_model_name(name: str) -> str:
    """TransformerLens's official name for a model name or alias; ValueError if it knows none."""
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name
    except ImportError:  # TL 4.x moved the registry
        from transformer_lens.supported_models import get_official_model_name
    return get_official_model_name(name)
