"""jaxviz: synthesize the preferred inputs of neurons with JAX."""

__version__ = "0.1.0"
