#!/usr/bin/env python
"""`python tools/eval_pretext.py ...`: `mmssl eval-pretext ...` (mmssl/cli/eval_pretext.py) as a script."""
from mmssl.cli.eval_pretext import main

if __name__ == "__main__":
    main()
