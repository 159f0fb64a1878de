#!/usr/bin/env python
"""`python tools/plot_run.py ...`: `mmssl plot-run ...` (mmssl/cli/plot_run.py) as a script."""
from mmssl.cli.plot_run import main

if __name__ == "__main__":
    main()
