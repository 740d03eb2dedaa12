//! Identity stitching: from the live identity links of every dataflow to one
//! cluster per identifier, maintained incrementally either with differential
//! dataflow, spread over the workers by key ([`stitch`]: a cluster of
//! processes), or by one worker that recomputes only the components each
//! time touches ([`stitch_at_once`]: one process, and any run that asks
//! only at its end).
//!
//! Invariant: the output is a function of the live links alone (hubs by
//! distinct-neighbour count, first_seen as the earliest live link, components
//! by minimum-label propagation over links between non-hubs), so it is the
//! same whatever order or batching produced those links, and the same from
//! both operators; each identifier's updates come from the worker that
//! differential's hash of it names.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::algorithms::graphs::propagate::propagate;
use differential_dataflow::hashable::Hashable;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::core::Exchange as _;
use timely::dataflow::operators::generic::Operator;

use super::at_once::{Assignment, AtOnce};
use super::collect::RecordsOut;
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

/// A time's link updates, with the capability to emit at it.
type Waiting = (Capability<u64>, Vec<(LinkFact, isize)>);

/// [`stitch`] on one worker: worker 0 gathers every link update and, as
/// each time completes, brings the assignments up to date
/// ([`AtOnce::complete`]) and emits how they changed. The updates then go
/// to the worker that [`stitch`]'s last arrangement would put them on
/// (differential's hash of the identifier), so either operator's output
/// meets the same collector.
///
/// `given`: assignments stored by an earlier run (a single process's
/// rebuild, at time 0), preloaded as already given, so the completion of
/// their time emits only what differs from them ([`AtOnce::preload`]).
///
/// `after`: set by the worker's collector once it has handed on the folds'
/// last records (`collect::collect`, a replay's end). The completion after
/// the links' stream closed waits for it (the operator asks to run again
/// meanwhile), so that those records go to the store's writer before this
/// worker is busy with identity: the writer writes them meanwhile.
pub(crate) fn stitch_at_once<'s>(
    links: StreamVec<'s, u64, (LinkFact, u64, isize)>,
    given: StreamVec<'s, u64, (Sym, Assignment)>,
    config: Arc<IdentityConfig>,
    after: Option<RecordsOut>,
) -> StreamVec<'s, u64, ((Sym, Assignment), u64, isize)> {
    let scope = links.scope();
    let gather = Exchange::new(|_: &(LinkFact, u64, isize)| 0);
    let gather_given = Exchange::new(|_: &(Sym, Assignment)| 0);
    links
        .binary_frontier(
            given,
            gather,
            gather_given,
            "identity.at_once",
            move |_cap, info| {
                let activator = scope.activator_for(info.address);
                let mut state = AtOnce::default();
                // Updates by the time they belong to (at or after their
                // message's).
                let mut pending: BTreeMap<u64, Waiting> = BTreeMap::new();
                let mut out = Vec::new();
                move |(links, links_frontier), (given, given_frontier), output| {
                    links.for_each(|cap, data| {
                        for (fact, t, diff) in data.drain(..) {
                            let entry = pending.entry(t).or_insert_with(|| {
                                (cap.delayed(&t, output.output_index()), Vec::new())
                            });
                            entry.1.push((fact, diff));
                        }
                    });
                    given.for_each(|cap, data| {
                        // Their time completes (and retracts the ones left
                        // without links) even if no link update comes.
                        if let Some(&t) = cap.least() {
                            pending.entry(t).or_insert_with(|| {
                                (cap.delayed(&t, output.output_index()), Vec::new())
                            });
                        }
                        for (x, a) in data.drain(..) {
                            state.preload(x, a, &config);
                        }
                    });
                    let complete_below =
                        |t: &u64| !links_frontier.less_equal(t) && !given_frontier.less_equal(t);
                    while let Some((&t, _)) = pending.first_key_value() {
                        if !complete_below(&t) {
                            break;
                        }
                        if links_frontier.is_empty() && after.as_ref().is_some_and(|a| !a.get()) {
                            activator.activate();
                            break;
                        }
                        let Some((_, (cap, updates))) = pending.pop_first() else {
                            break;
                        };
                        for (fact, diff) in updates {
                            state.push(fact, diff);
                        }
                        state.complete(&config, &mut out);
                        output
                            .session(&cap)
                            .give_iterator(out.drain(..).map(|(x, diff)| (x, t, diff)));
                    }
                }
            },
        )
        .exchange(|((x, _), _, _): &((Sym, Assignment), u64, isize)| x.hashed())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use differential_dataflow::AsCollection;
    use rand::{RngExt, SeedableRng};
    use timely::dataflow::operators::Input;
    use timely::dataflow::operators::core::Inspect;

    use super::*;

    /// (identifier, cluster, hub, time, worker that emitted it) -> net diff.
    type Out = BTreeMap<(String, String, bool, u64, usize), isize>;
    /// A time's link updates, as text: ((a, b), first_seen, diff).
    type Batch = Vec<((String, String), i64, isize)>;

    /// Random link updates over a few identifiers of three types: new links
    /// (the same pair again, with another first_seen, as a second dataflow
    /// would), removals and first_seen changes of live ones; with the small
    /// limits below some identifiers are hubs and stop being hubs again.
    fn batches(seed: u64, times: usize) -> Vec<Batch> {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut live: Vec<((String, String), i64)> = Vec::new();
        let id = |rng: &mut rand::rngs::Xoshiro256PlusPlus| {
            let ty = ["account", "device", "gp"][rng.random_range(0..3)];
            format!("{ty}:{}", rng.random_range(0..10))
        };
        (0..times)
            .map(|_| {
                let mut batch = Batch::new();
                for _ in 0..rng.random_range(0..25) {
                    match rng.random_range(0..5) {
                        0..=2 => {
                            let (a, b) = (id(&mut rng), id(&mut rng));
                            if a == b {
                                continue;
                            }
                            let pair = if a < b { (a, b) } else { (b, a) };
                            let fs = rng.random_range(0..50);
                            batch.push((pair.clone(), fs, 1));
                            live.push((pair, fs));
                        }
                        3 if !live.is_empty() => {
                            let (pair, fs) = live.swap_remove(rng.random_range(0..live.len()));
                            batch.push((pair, fs, -1));
                        }
                        4 if !live.is_empty() => {
                            let i = rng.random_range(0..live.len());
                            let fs = rng.random_range(0..50);
                            batch.push((live[i].0.clone(), live[i].1, -1));
                            batch.push((live[i].0.clone(), fs, 1));
                            live[i].1 = fs;
                        }
                        _ => {}
                    }
                }
                batch
            })
            .collect()
    }

    /// Both operators over the same updates, each time's own, on `workers`
    /// workers (each sends a share of every batch). Outputs are keyed by
    /// the worker that emitted them too: placement must agree.
    fn run_both(workers: usize, batches: Vec<Batch>) -> (Out, Out) {
        let config = Arc::new(IdentityConfig {
            max_links: 3,
            max_links_by_type: [("device".to_string(), 2)].into_iter().collect(),
            ..IdentityConfig::default()
        });
        let outs = [
            Arc::new(Mutex::new(Out::new())),
            Arc::new(Mutex::new(Out::new())),
        ];
        let (o0, o1) = (outs[0].clone(), outs[1].clone());
        let batches = Arc::new(batches);
        timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let sink = |out: Arc<Mutex<Out>>| {
                move |((x, (c, hub)), t, d): &((Sym, Assignment), u64, isize)| {
                    let key = (x.text().to_string(), c.text().to_string(), *hub, *t, index);
                    *out.lock().unwrap().entry(key).or_default() += d;
                }
            };
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, links) = scope.new_input::<Vec<(LinkFact, u64, isize)>>();
                stitch(links.clone().as_collection(), config.clone())
                    .inner
                    .inspect(sink(o0.clone()));
                // No stored assignments: the input closes at once.
                let (_, given) = scope.new_input::<Vec<(Sym, Assignment)>>();
                stitch_at_once(links, given, config.clone(), None).inspect(sink(o1.clone()));
                input
            });
            for (t, batch) in batches.iter().enumerate() {
                input.advance_to(t as u64);
                for (i, ((a, b), fs, d)) in batch.iter().enumerate() {
                    if i % peers == index {
                        let pair = (Sym::intern(a).unwrap(), Sym::intern(b).unwrap());
                        input.send(((pair, *fs), t as u64, *d));
                    }
                }
                worker.step();
            }
        })
        .unwrap()
        .join()
        .into_iter()
        .for_each(|r| r.unwrap());
        let take = |o: &Arc<Mutex<Out>>| {
            let mut o = std::mem::take(&mut *o.lock().unwrap());
            o.retain(|_, d| *d != 0);
            o
        };
        (take(&outs[0]), take(&outs[1]))
    }

    #[test]
    fn at_once_gives_what_differential_gives_at_every_time() {
        let mut hubs = 0;
        for seed in 0..12 {
            for workers in [1, 2] {
                let (incremental, at_once) = run_both(workers, batches(seed, 8));
                assert!(!incremental.is_empty(), "seed {seed}");
                assert_eq!(at_once, incremental, "seed {seed}, {workers} workers");
                hubs += incremental.keys().filter(|k| k.2).count();
            }
        }
        // The limits made hubs, and they changed over time.
        assert!(hubs > 10, "{hubs}");
    }

    #[test]
    fn at_once_retracts_everything_when_the_links_go() {
        let mut first = batches(99, 3);
        let live: BTreeMap<((String, String), i64), isize> =
            first
                .iter()
                .flatten()
                .fold(BTreeMap::new(), |mut m, (p, fs, d)| {
                    *m.entry((p.clone(), *fs)).or_default() += d;
                    m
                });
        first.push(
            live.into_iter()
                .filter(|(_, d)| *d != 0)
                .map(|((p, fs), d)| (p, fs, -d))
                .collect(),
        );
        let (incremental, at_once) = run_both(2, first);
        assert_eq!(at_once, incremental);
        let mut net: BTreeMap<(String, String, bool), isize> = BTreeMap::new();
        for ((x, c, h, _, _), d) in &at_once {
            *net.entry((x.clone(), c.clone(), *h)).or_default() += d;
        }
        net.retain(|_, d| *d != 0);
        assert!(net.is_empty(), "{net:?}");
        assert!(at_once.keys().any(|k| k.3 == 3));
    }
}
