"""Training code that reproduces the project's models."""
