"""Code shared by the server and the client: data formats, model, training, metrics, wire formats.

`fedrec.server` and `fedrec.client` import this package and never each other.
"""
