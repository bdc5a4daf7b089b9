"""Per-layer configuration: fan-out (ForEach), recovery (Catch, Retry) and resources (Container)."""

from laminar._model.layer_options import Catch, Configuration, Container, ForEach, Parameter, Retry

__all__ = ["Catch", "Configuration", "Container", "ForEach", "Parameter", "Retry"]
