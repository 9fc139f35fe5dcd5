"""``python -m iosim``: the iosim command line."""
from iosim.cli import main

main()
