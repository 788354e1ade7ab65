"""The one exception type for mistakes a user can fix.

It subclasses ValueError so notebooks and tests can catch it as such.  Entry points
print its message on one line and exit with status 2 (see ``core.cli.run_main``).
Messages say what is wrong, what was expected vs what was found, and how to fix it.
"""


class ToolkitError(ValueError):
    """A user-fixable problem: bad input, a missing file, a wrong setting."""


def name_list(names, limit: int = 5) -> str:
    """``a, b, c, ... (+n more)``: a long list of names kept to one line of a message."""
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")
