"""Calls: recording, settling and finishing them, the hot-path writer, routes, the owners book and the
failsafe's spool."""
