//! The write path: [`Store::commit`] turns changes, dead letters and progress
//! into one sled multi-tree transaction.
//!
//! Invariant: everything a commit writes goes through a single
//! `Transactional::transaction` call over every tree it touches, so sled
//! recovers it all or nothing. The closure may run more than once, so it is
//! pure: keys and values are encoded beforehand into one arena, and the
//! closure only reads through the transaction (edge flags, counters) and
//! writes. Trees are opened before the transaction (sled cannot open one
//! inside); removals never create a tree.
//!
//! The closure writes key by key rather than through per-tree `sled::Batch`es:
//! inside a transaction `apply_batch` is the same loop of inserts, and one
//! write (dropping a stale `edge_in/` key when an edge stops being reversed)
//! depends on the old value, which only the transaction can read.

use std::collections::BTreeMap;

use sled::Tree;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use super::merge::{decode_exact, edge_value_reverse};
use super::{
    DataflowCounters, DeadLetterRef, Family, META_COMMITS, META_DATAFLOW, META_POSITION, Store,
    StoreError, TREE_META, codec,
};
use crate::model::{Change, DataflowProgress, DeadLetter, Progress, split_ident};

/// Fixed positions of the always-present trees in the transaction.
const T_META: usize = 0;
const T_LINK: usize = 1;
const T_ID: usize = 2;
const T_CLUSTER: usize = 3;

/// A byte range of the arena.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
}

/// One write, with its bytes in the arena and its trees as indexes.
#[derive(Clone, Copy, Debug)]
enum Op {
    Put {
        tree: usize,
        key: Span,
        value: Span,
    },
    Del {
        tree: usize,
        key: Span,
    },
    /// Forward key always; reverse key when `reverse`; when not `reverse`,
    /// the reverse key is removed if the old value was written reversed.
    EdgePut {
        fwd: usize,
        inn: Option<usize>,
        key: Span,
        in_key: Span,
        value: Span,
        reverse: bool,
    },
    EdgeDel {
        fwd: usize,
        inn: Option<usize>,
        key: Span,
        in_key: Span,
    },
    LinkPut {
        ab: Span,
        ba: Span,
        value: Span,
    },
    LinkDel {
        ab: Span,
        ba: Span,
    },
}

/// Counter updates and dead letters of one dataflow.
struct DataflowPlan<'a> {
    name: &'a str,
    meta_key: Span,
    progress: Option<&'a DataflowProgress>,
    dead_tree: Option<usize>,
    dead_values: Vec<Span>,
}

/// Everything a commit writes, encoded, ready for the transaction.
struct Plan<'a> {
    trees: Vec<Tree>,
    arena: Vec<u8>,
    ops: Vec<Op>,
    dataflows: Vec<DataflowPlan<'a>>,
    positions: Vec<(Span, u64)>,
    commits_key: Span,
}

impl Plan<'_> {
    fn bytes(&self, s: Span) -> &[u8] {
        &self.arena[s.start..s.end]
    }
}

/// Builds keys and values into the arena.
struct Arena {
    buf: Vec<u8>,
}

impl Arena {
    fn span_from(&self, start: usize) -> Span {
        Span {
            start,
            end: self.buf.len(),
        }
    }

    fn key(&mut self, segments: &[&str]) -> Span {
        let start = self.buf.len();
        for s in segments {
            codec::push_str(&mut self.buf, s);
        }
        self.span_from(start)
    }

    fn postcard<T: serde::Serialize>(
        &mut self,
        value: &T,
        what: &'static str,
    ) -> Result<Span, StoreError> {
        let start = self.buf.len();
        postcard::to_io(value, &mut self.buf).map_err(|e| StoreError::Encode {
            what,
            detail: e.to_string(),
        })?;
        Ok(self.span_from(start))
    }
}

/// Resolves (family, name) to an index in the transaction's tree list.
struct TreeIndex<'a> {
    store: &'a Store,
    trees: Vec<Tree>,
    index: BTreeMap<(Family, &'a str), usize>,
}

impl<'a> TreeIndex<'a> {
    /// The index of `family/name`, opening (creating) the tree if needed.
    fn get_or_create(&mut self, family: Family, name: &'a str) -> Result<usize, StoreError> {
        if let Some(&i) = self.index.get(&(family, name)) {
            return Ok(i);
        }
        let tree = self.store.dyn_tree_or_create(family, name)?;
        Ok(self.push(family, name, tree))
    }

    /// The index of `family/name` if that tree exists.
    fn get_existing(&mut self, family: Family, name: &'a str) -> Option<usize> {
        if let Some(&i) = self.index.get(&(family, name)) {
            return Some(i);
        }
        let tree = self.store.dyn_tree(family, name)?;
        Some(self.push(family, name, tree))
    }

    fn push(&mut self, family: Family, name: &'a str, tree: Tree) -> usize {
        let i = self.trees.len();
        self.trees.push(tree);
        self.index.insert((family, name), i);
        i
    }
}

impl Store {
    /// Applies all `changes`, `dead_letters` and `progress` in ONE atomic
    /// step across every tree (a sled multi-tree transaction), holding the
    /// gate exclusively so that no read sees a part of it.
    ///
    /// `record: Some(r)` puts that dataflow's contribution, `None` removes it
    /// (with its reverse-index or other-direction key). `Cluster { cluster:
    /// None }` and `Member { present: false }` remove. Progress counters are
    /// added, the watermark keeps its maximum, positions are set. Dead letters
    /// get the next sequence numbers of their dataflow.
    pub fn commit(
        &self,
        changes: &[Change],
        dead_letters: &[DeadLetter],
        progress: &Progress,
    ) -> Result<(), StoreError> {
        if changes.is_empty()
            && dead_letters.is_empty()
            && progress.dataflows.is_empty()
            && progress.positions.is_empty()
        {
            return Ok(());
        }
        let plan = self.plan(changes, dead_letters, progress)?;
        // Readers wait while the transaction runs (see "Isolation").
        let _exclusive = self.gate_exclusive();
        let result = plan
            .trees
            .as_slice()
            .transaction(|views: &Vec<TransactionalTree>| apply(&plan, views));
        match result {
            Ok(()) => {
                self.inner
                    .commits
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(self.sled(e)),
        }
    }

    /// Encodes every key and value and opens every tree the commit needs.
    fn plan<'a>(
        &'a self,
        changes: &'a [Change],
        dead_letters: &'a [DeadLetter],
        progress: &'a Progress,
    ) -> Result<Plan<'a>, StoreError> {
        let inner = &self.inner;
        let mut trees = TreeIndex {
            store: self,
            trees: vec![
                inner.meta.clone(),
                inner.link.clone(),
                inner.id.clone(),
                inner.cluster.clone(),
            ],
            index: BTreeMap::new(),
        };
        let mut a = Arena {
            buf: Vec::with_capacity(changes.len() * 96 + dead_letters.len() * 128 + 256),
        };
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            let op = match change {
                Change::Node {
                    id,
                    dataflow,
                    record,
                } => {
                    let (node_type, id_part) = split_ident(id);
                    let tree = match record {
                        Some(_) => trees.get_or_create(Family::Node, node_type)?,
                        // No tree, nothing to remove: do not create one.
                        None => match trees.get_existing(Family::Node, node_type) {
                            Some(tree) => tree,
                            None => continue,
                        },
                    };
                    let key = a.key(&[id_part, dataflow]);
                    match record {
                        Some(r) => Op::Put {
                            tree,
                            key,
                            value: a.postcard(r, "a node record")?,
                        },
                        None => Op::Del { tree, key },
                    }
                }
                Change::Edge {
                    edge_type,
                    from,
                    to,
                    dataflow,
                    reverse,
                    record,
                } => {
                    let writes = record.is_some();
                    let fwd = if writes {
                        trees.get_or_create(Family::Edge, edge_type)?
                    } else {
                        // An `edge_in/` key never exists without its `edge/` key.
                        match trees.get_existing(Family::Edge, edge_type) {
                            Some(tree) => tree,
                            None => continue,
                        }
                    };
                    let inn = if writes && *reverse {
                        Some(trees.get_or_create(Family::EdgeIn, edge_type)?)
                    } else {
                        trees.get_existing(Family::EdgeIn, edge_type)
                    };
                    let key = a.key(&[from, to, dataflow]);
                    let in_key = match inn {
                        Some(_) => a.key(&[to, from, dataflow]),
                        None => Span { start: 0, end: 0 },
                    };
                    match record {
                        Some(r) => {
                            let value = a.postcard(r, "an edge record")?;
                            a.buf.push(u8::from(*reverse));
                            Op::EdgePut {
                                fwd,
                                inn,
                                key,
                                in_key,
                                value: a.span_from(value.start),
                                reverse: *reverse,
                            }
                        }
                        None => Op::EdgeDel {
                            fwd,
                            inn,
                            key,
                            in_key,
                        },
                    }
                }
                Change::Link {
                    a: x,
                    b: y,
                    dataflow,
                    record,
                } => {
                    let ab = a.key(&[x, y, dataflow]);
                    let ba = a.key(&[y, x, dataflow]);
                    match record {
                        Some(r) => Op::LinkPut {
                            ab,
                            ba,
                            value: a.postcard(r, "a link record")?,
                        },
                        None => Op::LinkDel { ab, ba },
                    }
                }
                Change::Cluster { id, cluster } => {
                    let key = a.key(&[id]);
                    match cluster {
                        Some(c) => Op::Put {
                            tree: T_ID,
                            key,
                            value: a.postcard(c, "a cluster entry")?,
                        },
                        None => Op::Del { tree: T_ID, key },
                    }
                }
                Change::Member {
                    cluster,
                    member,
                    present,
                } => {
                    let key = a.key(&[cluster, member]);
                    if *present {
                        Op::Put {
                            tree: T_CLUSTER,
                            key,
                            value: Span { start: 0, end: 0 },
                        }
                    } else {
                        Op::Del {
                            tree: T_CLUSTER,
                            key,
                        }
                    }
                }
            };
            ops.push(op);
        }

        // Counters: one entry per dataflow with progress or dead letters.
        let mut by_name: BTreeMap<&str, DataflowPlan<'a>> = BTreeMap::new();
        for (name, p) in &progress.dataflows {
            by_name
                .entry(name.as_str())
                .or_insert_with(|| DataflowPlan {
                    name,
                    meta_key: Span { start: 0, end: 0 },
                    progress: None,
                    dead_tree: None,
                    dead_values: Vec::new(),
                })
                .progress = Some(p);
        }
        for d in dead_letters {
            let tree = trees.get_or_create(Family::Dead, &d.dataflow)?;
            let value = a.postcard(
                &DeadLetterRef {
                    source: &d.source,
                    reason: &d.reason,
                },
                "a dead letter",
            )?;
            let plan = by_name
                .entry(d.dataflow.as_str())
                .or_insert_with(|| DataflowPlan {
                    name: &d.dataflow,
                    meta_key: Span { start: 0, end: 0 },
                    progress: None,
                    dead_tree: None,
                    dead_values: Vec::new(),
                });
            plan.dead_tree = Some(tree);
            plan.dead_values.push(value);
        }
        let mut dataflows: Vec<DataflowPlan<'a>> = by_name.into_values().collect();
        for d in &mut dataflows {
            d.meta_key = a.key(&[META_DATAFLOW, d.name]);
        }
        let positions = progress
            .positions
            .iter()
            .map(|((dataflow, partition), pos)| {
                (a.key(&[META_POSITION, dataflow, partition]), *pos)
            })
            .collect();
        let commits_key = a.key(&[META_COMMITS]);
        Ok(Plan {
            trees: trees.trees,
            arena: a.buf,
            ops,
            dataflows,
            positions,
            commits_key,
        })
    }
}

/// The transaction body: pure given `plan` and what it reads through `t`.
fn apply(
    plan: &Plan<'_>,
    t: &[TransactionalTree],
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let b = |s: Span| plan.bytes(s);
    for op in &plan.ops {
        match *op {
            Op::Put { tree, key, value } => {
                t[tree].insert(b(key), b(value))?;
            }
            Op::Del { tree, key } => {
                t[tree].remove(b(key))?;
            }
            Op::EdgePut {
                fwd,
                inn,
                key,
                in_key,
                value,
                reverse,
            } => {
                let old = t[fwd].insert(b(key), b(value))?;
                if let Some(inn) = inn {
                    if reverse {
                        t[inn].insert(b(in_key), b(value))?;
                    } else if old.is_some_and(|v| edge_value_reverse(&v)) {
                        t[inn].remove(b(in_key))?;
                    }
                }
            }
            Op::EdgeDel {
                fwd,
                inn,
                key,
                in_key,
            } => {
                t[fwd].remove(b(key))?;
                if let Some(inn) = inn {
                    t[inn].remove(b(in_key))?;
                }
            }
            Op::LinkPut { ab, ba, value } => {
                t[T_LINK].insert(b(ab), b(value))?;
                t[T_LINK].insert(b(ba), b(value))?;
            }
            Op::LinkDel { ab, ba } => {
                t[T_LINK].remove(b(ab))?;
                t[T_LINK].remove(b(ba))?;
            }
        }
    }

    let meta = &t[T_META];
    let corrupt = |key: &[u8], detail: &dyn std::fmt::Display| {
        ConflictableTransactionError::Abort(StoreError::corrupt(TREE_META, key, detail))
    };
    let encode_err = |e: postcard::Error| {
        ConflictableTransactionError::Abort(StoreError::Encode {
            what: "dataflow counters",
            detail: e.to_string(),
        })
    };
    for d in &plan.dataflows {
        let key = b(d.meta_key);
        let mut c: DataflowCounters = match meta.get(key)? {
            Some(v) => decode_exact(&v, "dataflow counters").map_err(|e| corrupt(key, &e))?,
            None => DataflowCounters::default(),
        };
        if let Some(p) = d.progress {
            c.events = c.events.saturating_add(p.events);
            c.late = c.late.saturating_add(p.late);
            c.watermark = match (c.watermark, p.watermark) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
        }
        if let Some(tree) = d.dead_tree {
            for &v in &d.dead_values {
                t[tree].insert(&c.next_dead_letter.to_be_bytes()[..], b(v))?;
                c.next_dead_letter = c.next_dead_letter.saturating_add(1);
                c.dead_letters = c.dead_letters.saturating_add(1);
            }
        }
        meta.insert(key, postcard::to_stdvec(&c).map_err(encode_err)?)?;
    }
    for &(key, pos) in &plan.positions {
        meta.insert(b(key), &pos.to_be_bytes()[..])?;
    }
    let commits_key = b(plan.commits_key);
    let commits = match meta.get(commits_key)? {
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(commits_key, &"commit count is not 8 bytes"))?,
        None => 0,
    };
    meta.insert(commits_key, &commits.saturating_add(1).to_be_bytes()[..])?;
    Ok(())
}
