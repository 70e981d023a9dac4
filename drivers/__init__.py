"""Time Tagger drivers: find attached instruments and read them over USB.

``find_timetaggers`` discovers devices through pyusb; ``TimeTagger`` reads
sensors, calibration, configuration, traffic counters and the message log
over the vendor control-request protocol described in ``docs/protocol.md``.
The driver returns raw device data, serials included: the daemon masks it at
the boundary where it enters.
"""
