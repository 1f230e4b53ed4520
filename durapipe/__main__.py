"""``python -m durapipe``: the same as the ``durapipe`` command."""

from durapipe_entry import main

if __name__ == "__main__":
    main()
