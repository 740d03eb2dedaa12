"""Kuzu (PyPI `kuzu`), embedded: see cypher_embedded.py for how it is
written to and read."""

NAME = "Kuzu"
PACKAGE = "kuzu"


def open_db(path, node_schema, edge_schema):
    import kuzu

    from cypher_embedded import KuzuFamily
    return KuzuFamily(kuzu, path, node_schema, edge_schema)
