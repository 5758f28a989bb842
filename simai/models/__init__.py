"""Models: the registry in the store, in-process inference with hot reload, a served variant.

`store.publish_model(name, model)` saves versions (simai.store.registry); `Surrogate(name)`
calls the latest one inside a simulation and swaps in new ones as they appear; `serve` and
`SurrogateClient` do the same across processes, through the store.
"""

from simai.models.served import SurrogateClient, serve
from simai.models.surrogate import Surrogate

__all__ = [
    "Surrogate",
    "SurrogateClient",
    "serve",
]
