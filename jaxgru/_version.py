"""The package version, kept apart so modules inside jaxgru can read it without importing
the package itself."""

__version__ = "0.1.0"
