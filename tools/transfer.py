#!/usr/bin/env python
"""`python tools/transfer.py ...`: `mmssl transfer ...` (mmssl/cli/transfer.py) as a script."""
from mmssl.cli.transfer import main

if __name__ == "__main__":
    main()
