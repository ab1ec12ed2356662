"""Kairos: a streaming feature store plus online learner for an event-centric marketplace."""

__version__ = "0.1.0"
