"""Bytewax dataflows of Kairos: short wiring of the pure steps in :mod:`flows.steps`."""
