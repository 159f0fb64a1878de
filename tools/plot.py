#!/usr/bin/env python
"""`python tools/plot.py ...`: `mmssl plot ...` (mmssl/cli/plot.py) as a script."""
from mmssl.cli.plot import main

if __name__ == "__main__":
    main()
