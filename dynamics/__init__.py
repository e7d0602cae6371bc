"""Core of the toolkit: models, exact Gauss–Newton, empirical NTK, capture, run stores, Recorder.

This layer imports no other package of the project (trainers, analysis, reports sit above it).
"""

__version__ = "0.1.0"
