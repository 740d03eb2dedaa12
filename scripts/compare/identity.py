"""Identity: connected components over the identity links, as networkx and
igraph compute them from scratch after each change, and the check of their
partition against rdg's export.

The links are derived from the events by the `[[identity]]` rules
(events.identity_links). rdg's semantics (docs/semantics.md "Identity"):
an identifier with more distinct neighbours than its type's `max_links` is a
hub; clusters are the components of the links whose two ends are non-hubs.
Each change (one link added, then removed again) is followed by a full
recomputation of the components: that is what a batch library offers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from harness import now


def hubs_of(links: set, settings: dict) -> set:
    ident = settings.get("identity", {})
    default = ident.get("max_links", 50)
    by_type = ident.get("max_links_by_type", {})
    neighbours = defaultdict(set)
    for a, b in links:
        neighbours[a].add(b)
        neighbours[b].add(a)
    return {k for k, ns in neighbours.items() if len(ns) > by_type.get(k.split(":", 1)[0], default)}


def stitched(links: set, hubs: set) -> list:
    return [(a, b) for a, b in links if a not in hubs and b not in hubs]


def partition_check(components: list[set], identity: dict) -> dict:
    """Compares components (of non-hub identifiers with a link to a non-hub)
    with rdg's identity entries: every component must be exactly one rdg
    cluster. rdg also lists identifiers whose links all go to hubs as
    their own cluster; those are not in any component here and are not
    compared."""
    clusters = defaultdict(set)
    for key, (cluster, hub) in identity.items():
        if not hub:
            clusters[cluster].add(key)
    bad = 0
    for comp in components:
        ids = {identity.get(k, (None, None))[0] for k in comp}
        if len(ids) != 1 or None in ids or clusters[next(iter(ids))] != comp:
            bad += 1
    multi = sum(1 for c in clusters.values() if len(c) > 1)
    return {"components": len(components), "rdg_clusters_of_2_or_more": multi,
            "components_not_equal_to_an_rdg_cluster": bad}


def networkx_changes(links: list, changes: list) -> dict:
    import networkx as nx
    t0 = now()
    g = nx.Graph()
    g.add_edges_from(links)
    comps = [set(c) for c in nx.connected_components(g)]
    build = now() - t0
    times = []
    for a, b in changes:
        for add in (True, False):
            t0 = now()
            if add:
                g.add_edge(a, b)
            else:
                g.remove_edge(a, b)
            n = sum(1 for _ in nx.connected_components(g))
            times.append(now() - t0)
    return {"version": nx.__version__, "build_seconds": build, "components": comps,
            "per_change_s": times, "median_s": statistics.median(times), "last_count": n}


def igraph_changes(links: list, changes: list) -> dict:
    import igraph as ig
    t0 = now()
    names = {}
    for a, b in links:
        names.setdefault(a, len(names))
        names.setdefault(b, len(names))
    for a, b in changes:
        names.setdefault(a, len(names))
        names.setdefault(b, len(names))
    g = ig.Graph(n=len(names), edges=[(names[a], names[b]) for a, b in links])
    g.connected_components()
    build = now() - t0
    times = []
    for a, b in changes:
        for add in (True, False):
            t0 = now()
            if add:
                g.add_edge(names[a], names[b])
            else:
                g.delete_edges(g.get_eid(names[a], names[b]))
            n = len(g.connected_components())
            times.append(now() - t0)
    return {"version": ig.__version__, "build_seconds": build, "per_change_s": times,
            "median_s": statistics.median(times), "last_count": n}
