"""The `streamlearn` command line: a thin layer over shared helpers and service clients."""
