"""The error a steering loop stops with."""

__all__ = ["SteeringError"]


class SteeringError(RuntimeError):
    """The loop could not go on: too many failed simulations, or unusable predictions."""
