#!/usr/bin/env python
"""`python tools/export.py ...`: `mmssl export ...` (mmssl/cli/export.py) as a script."""
from mmssl.cli.export import main

if __name__ == "__main__":
    main()
