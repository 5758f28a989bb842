"""simai: couple simulations with AI/ML, from a laptop to a supercomputer."""

from simai.store import CorruptValueError, Store, open_store, store

__version__ = "0.1.0"

__all__ = ["CorruptValueError", "Store", "open_store", "store", "__version__"]
