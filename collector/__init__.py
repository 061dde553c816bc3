"""Device-side collection of client-certificate facts.

This package must not import regorus or ``certposture``: a device needs only
cryptography, pydantic and orjson to run it.
"""

__version__ = "0.1.0"
