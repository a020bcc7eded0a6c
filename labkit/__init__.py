"""labkit: the helper package of the SERVAL teaching kit.

Modules, one concept each (see docs/architecture.md):
data, hardware, loader, adapters, train, annotate, metrics, vertical, noisy, serval, grading, course.
"""

__version__ = "0.1.0"
