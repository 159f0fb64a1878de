#!/usr/bin/env python
"""`python tools/make_shards.py ...`: `mmssl make-shards ...` (mmssl/cli/make_shards.py) as a script."""
import sys

from mmssl.cli.make_shards import main

if __name__ == "__main__":
    sys.exit(main())
