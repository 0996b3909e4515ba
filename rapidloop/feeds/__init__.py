"""What enforcement points read: the blocks in force (``active``), exports to
other products (``exports``) and the HTTP feed per tenant (``serve``).
"""
