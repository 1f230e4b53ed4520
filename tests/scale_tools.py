"""Tools for the scale tests."""


def measure(text: str) -> int:
    """The length of a text, in characters."""
    return len(text)
