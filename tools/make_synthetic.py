#!/usr/bin/env python
"""`python tools/make_synthetic.py ...`: `mmssl make-synthetic ...` (mmssl/cli/make_synthetic.py) as a script."""
import sys

from mmssl.cli.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
