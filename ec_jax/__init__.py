"""ec_jax: best-of-N selection with Entropy Centroids, in JAX.

Importing this package does not start a JAX backend; devices are touched only when a function
that needs them runs.
"""

__version__ = "0.1.0"
