"""Policy side of certposture: rule and signing-certificate store, Rego engine host and CLI."""

from collector import __version__

__all__ = ["__version__"]
