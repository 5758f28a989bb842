"""Models: a registry of versioned models in the store, in-process inference with hot reload,
and a served variant.

`publish_model(store, name, model)` saves versions and `load_model(store, name)` loads one
(simai.models.registry, which also documents the key layout); `Surrogate(name)` calls the
latest version inside a simulation and swaps in new ones as they appear; `serve` and
`SurrogateClient` do the same across processes, through the store.
"""

from simai.models.registry import latest_model, load_model, model_versions, publish_model
from simai.models.served import SurrogateClient, serve
from simai.models.surrogate import Surrogate

__all__ = [
    "Surrogate",
    "SurrogateClient",
    "latest_model",
    "load_model",
    "model_versions",
    "publish_model",
    "serve",
]
