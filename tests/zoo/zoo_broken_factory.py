"""A factory module whose own import fails, for the 'module:' spec tests."""

import ghn_zoo_test_dependency_that_does_not_exist  # noqa: F401


def make() -> None:
    return None
