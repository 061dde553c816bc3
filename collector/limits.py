"""Default limits of the PEM and DER source.

They live apart from ``collector.sources.pem``, which imports cryptography and
the pydantic facts models, so that the CLI can show them in its help text
without loading either.
"""

# Certificate and key files are a few KiB, and a chain with many certificates
# stays well below this. Larger files are skipped so that a mistyped path (a log, a
# disk image) is not read into memory.
DEFAULT_MAX_FILE_SIZE = 1024 * 1024

# The largest PEM files in normal use are CA bundles, such as Debian 12's
# /etc/ssl/certs/ca-certificates.crt with 144 certificates, and a client
# certificate file contains a chain of a few. Each certificate costs a signature
# check per stored signing certificate and adds an entry to the facts. A 1 MiB
# file can contain a few thousand small certificates, so this limit is the one
# that bounds the work per file.
DEFAULT_MAX_CERTIFICATES_PER_FILE = 1_000
