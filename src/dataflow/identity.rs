//! Identity stitching: from the live identity links of every dataflow to one
//! cluster per identifier, maintained incrementally with differential dataflow.
//!
//! Invariant: the output is a function of the live links alone (hubs by
//! distinct-neighbour count, first_seen as the earliest live link, components
//! by minimum-label propagation over links between non-hubs), so it is the
//! same whatever order or batching produced those links.

use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::algorithms::graphs::propagate::propagate;

use super::symbols::{ByText, Sym};
use crate::model::{EventTime, split_ident};
use crate::spec::IdentityConfig;

/// A live link contribution: the pair (`a < b`) and its first_seen.
pub(crate) type LinkFact = ((Sym, Sym), EventTime);

/// Computes, for every identifier with a live link, its cluster and
/// whether it is a hub.
pub(crate) fn stitch<'s>(
    links: VecCollection<'s, u64, LinkFact, isize>,
    config: Arc<IdentityConfig>,
) -> VecCollection<'s, u64, (Sym, (Sym, bool)), isize> {
    // Both directions of every link, with its first_seen.
    let sym = links.flat_map(|((a, b), fs)| [(a, (b, fs)), (b, (a, fs))]);
    // Distinct neighbours (links of several dataflows count once).
    let neighbours = sym.clone().map(|(x, (y, _))| (x, y)).distinct();
    let hubs = neighbours
        .clone()
        .map(|(x, _)| x)
        .count()
        .filter(move |(x, n)| {
            let limit = config.max_links_for(split_ident(x.text()).0);
            u64::try_from(*n).unwrap_or(0) > limit
        })
        .map(|(x, _)| x);
    // An identifier's first_seen: the earliest first_seen of its live links.
    let first_seen =
        sym.map(|(x, (_, fs))| (x, fs))
            .reduce_named("identity.first_seen", |_x, input, output| {
                // Inputs arrive sorted by value: the first is the earliest.
                if let Some((fs, _)) = input.first() {
                    output.push((**fs, 1));
                }
            });
    // Links between non-hubs only (the neighbour relation is symmetric).
    let stitch_edges = neighbours
        .antijoin(hubs.clone())
        .map(|(x, y)| (y, x))
        .antijoin(hubs.clone());
    // Every non-hub starts with its own label (first_seen, `type:id` text);
    // the smallest label of a component wins.
    let labels = first_seen
        .antijoin(hubs.clone())
        .map(|(x, fs)| (x, (fs, ByText(x))));
    let components = propagate(stitch_edges, labels);
    components
        .map(|(x, (_, cluster))| (x, (cluster.0, false)))
        .concat(hubs.map(|h| (h, (h, true))))
}
