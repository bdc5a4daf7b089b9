"""Layer hooks: ``entry``, ``submission``, ``execution`` and ``retry`` (see :mod:`laminar._model.layer_hooks`).

- ``entry`` (scheduler): return truthy to run the layer, falsy to skip it. Must not be a generator.
- ``submission`` (scheduler): before each split is submitted; may change ``self.configuration``.
- ``execution`` (where the layer runs): wraps ``__call__``.
- ``retry`` (scheduler): before a retry's back-off.
"""

from laminar._model.layer_hooks import entry, execution, retry, submission

__all__ = ["entry", "execution", "retry", "submission"]
