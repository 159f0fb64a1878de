#!/usr/bin/env python
"""`python tools/visualize.py ...`: `mmssl visualize ...` (mmssl/cli/visualize.py) as a script."""
from mmssl.cli.visualize import main

if __name__ == "__main__":
    main()
