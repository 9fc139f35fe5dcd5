"""``python -m iosim``: the iosim command line."""
from .cli import main

main()
