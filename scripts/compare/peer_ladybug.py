"""LadybugDB (PyPI `ladybug`, Kuzu's fork, same API), embedded: see
cypher_embedded.py for how it is written to and read. It cannot share a
process with `kuzu` (both register the same native types), so every system
runs in its own process."""

NAME = "LadybugDB"
PACKAGE = "ladybug"


def open_db(path, node_schema, edge_schema):
    import ladybug

    from cypher_embedded import KuzuFamily
    return KuzuFamily(ladybug, path, node_schema, edge_schema)
