"""``python -m augkd`` is the ``augkd`` command."""

from augkd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
