#!/usr/bin/env python
"""`python tools/build_manifest.py ...`: `mmssl build-manifest ...` (mmssl/cli/build_manifest.py) as a script."""
import sys

from mmssl.cli.build_manifest import main

if __name__ == "__main__":
    sys.exit(main())
