"""fleetcast.trainer.quiet: the libraries' known noise is silenced, nothing else."""

from __future__ import annotations

import warnings

from fleetcast.trainer.quiet import quiet_libraries


def test_only_the_known_messages_are_silenced() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        for message in (
            "X has feature names, but StandardScaler was fitted without feature names",
            "Attribute 'loss' is an instance of `nn.Module` and is already saved",
            "The given NumPy array is not writable, and PyTorch does not support",
            "a warning nobody has seen before",
        ):
            warnings.warn(message, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning nobody has seen before"]
