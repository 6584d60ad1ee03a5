"""The error a metric raises when it cannot run on this machine (missing weights or package)."""


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here; the message names the file to fetch and where to put it.

    ``keep eval`` catches it, reports the metric as unavailable and still computes the others."""
