"""Tools used by the `brief` example pipeline (both spellings import them from here)."""


def count_words(article: str) -> int:
    """Count the words in the article."""
    return len(article.split())
