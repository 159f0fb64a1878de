#!/usr/bin/env python
"""`python tools/eval_av.py ...`: `mmssl eval-av ...` (mmssl/cli/eval_av.py) as a script."""
from mmssl.cli.eval_av import main

if __name__ == "__main__":
    main()
