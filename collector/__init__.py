"""tagstat.collector: the self-hostable service that receives tagstat usage reports.

A small WSGI application (werkzeug) with a SQLite store, for labs and vendors
who run their own collector and for the project's tests. It checks each report
against the documented schema with size limits (``schema``, ``intake``),
stores every report once (``storage``), carries out deletion requests and
serves per-model statistics (``app``). ``tagstat-collector`` (``cli``) runs it.
Nothing here imports the daemon's modules beyond the error base class, so the
collector stays a separate program that only shares the wire format.
"""
