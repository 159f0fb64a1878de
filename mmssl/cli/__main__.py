"""`python -m mmssl.cli <command> [args ...]`: the `mmssl` command without its installed script."""
import sys

from mmssl.cli import main

sys.exit(main())
