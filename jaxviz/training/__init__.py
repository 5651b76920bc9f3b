"""Training code for jaxviz's own small networks (the embedded MNIST classifier + generator pair)."""
