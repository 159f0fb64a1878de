#!/usr/bin/env python
"""`python tools/pretrain.py ...`: `mmssl pretrain ...` (mmssl/cli/pretrain.py) as a script."""
from mmssl.cli.pretrain import main

if __name__ == "__main__":
    main()
