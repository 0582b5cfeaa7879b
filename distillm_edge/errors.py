"""The one exception type for bad user input, shared by every layer.

Library code raises :class:`UserError` with a message that names the file, line, option or field
and says what would fix it; the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user (file, option, model spec); the message says how to fix it."""
