#!/usr/bin/env python
"""`python tools/audit_dataset.py ...`: `mmssl audit-dataset ...` (mmssl/cli/audit_dataset.py) as a script."""
from mmssl.cli.audit_dataset import main

if __name__ == "__main__":
    main()
