"""The cheap leaf the batch benchmark maps: a tool activity."""


def square(n: int) -> int:
    """n squared."""
    return n * n
