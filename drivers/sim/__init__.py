"""A simulated Time Tagger, so tagstat runs and is tested without hardware.

``model`` is the instrument (descriptors, the vendor protocol, counters that
follow a scripted rate, messages, faults) and the ``Simulation`` of a whole
scenario with its state persisted across daemon restarts; ``scenario`` reads
and validates scenario TOML files (``default.toml`` is the packaged default);
``pyusb_backend`` plugs a simulation into pyusb. ``docs/simulator.md``
describes the scenario format and the physical model.
"""
