"""Property-based tests: malformed input must become error entries or validation errors, never exceptions.

Each test passes its own example count to ``property_settings``. The counts keep
all property tests together under about a minute in ``make test``. Set
``HYPOTHESIS_PROFILE=long`` to multiply every count by ``LONG_RUN_FACTOR`` for a
longer local run, which also keeps failing examples in a database under the
system temporary directory, so that the next run replays them first. The
default run keeps no database. Hypothesis's other caches go to the temporary
directory too, so no run writes into the repository.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase

# Hypothesis keeps caches (string constants of the code base, Unicode tables) in ./.hypothesis
# unless told otherwise. HYPOTHESIS_STORAGE_DIRECTORY, when set, still takes precedence.
HYPOTHESIS_HOME = os.path.join(tempfile.gettempdir(), "certposture-hypothesis")
if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
    set_hypothesis_home_dir(HYPOTHESIS_HOME)

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
LONG_RUN_FACTOR = 25

DEFAULT_PROFILE = "certposture-property"
LONG_PROFILE = "certposture-property-long"
_PROFILES = {"": DEFAULT_PROFILE, "default": DEFAULT_PROFILE, "long": LONG_PROFILE}

# derandomize makes `make test` explore the same examples on every run, as Hypothesis's own
# ci profile does, so a test fails only when the code changes. The long profile explores at random.
settings.register_profile(
    DEFAULT_PROFILE,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    LONG_PROFILE,
    parent=settings.get_profile(DEFAULT_PROFILE),
    derandomize=False,
    database=DirectoryBasedExampleDatabase(os.path.join(HYPOTHESIS_HOME, "examples")),
)


def _profile_name() -> str:
    value = os.environ.get(PROFILE_VARIABLE, "")
    if value not in _PROFILES:
        valid = ", ".join(repr(name) for name in _PROFILES if name)
        raise ValueError(f"{PROFILE_VARIABLE}={value!r} is not a profile of the property tests; use {valid}")
    return _PROFILES[value]


def property_settings(max_examples: int) -> settings:
    """Build the settings of one property test from its example count in the default run."""
    profile = _profile_name()
    factor = LONG_RUN_FACTOR if profile == LONG_PROFILE else 1
    return settings(settings.get_profile(profile), max_examples=max_examples * factor)
