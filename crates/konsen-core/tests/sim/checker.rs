//! The simulator's safety checks, each named after the property of the
//! Raft paper (Figure 3) or thesis section it guards. Every check returns a
//! description of the violation instead of panicking, so that negative
//! controls can assert a violation was found.

use std::collections::BTreeMap;

use bytes::Bytes;
use konsen_core::storage::{MemStorage, Storage};
use konsen_core::{Entry, Index, NodeId, RawNode, ReadState, Role, Term};

#[derive(Debug, Default)]
pub struct Checker {
    /// Election Safety: the leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Log Matching: for each (index, term) ever persisted, the command and
    /// the term of the entry before it. By induction on the index, equal
    /// (index, term) then implies identical prefixes.
    entries: BTreeMap<(Index, Term), (Term, Bytes)>,
    /// State Machine Safety: what was applied at each index, anywhere,
    /// with the digest of the state it left.
    applied_log: BTreeMap<Index, (Term, Bytes, u64)>,
    /// For each applied index, the term of the node that applied it first,
    /// at that moment: the entry was committed in that term or an earlier
    /// one, so every leader of a later term must hold it.
    committed_by_term: BTreeMap<Index, Term>,
    /// Per node: the last index its state machine applied.
    applied: BTreeMap<NodeId, Index>,
    /// Leader Append-Only: for each node while leader, (term, last index,
    /// term of that entry) when last seen.
    leader_tail: BTreeMap<NodeId, (Term, Index, Term)>,
    /// The highest commit index any node has known.
    max_commit: Index,
    /// Reads in progress: (node, ctx) -> the commit index they must see.
    reads: BTreeMap<(NodeId, u64), Index>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A node restarted with its state machine at `applied` (its last
    /// snapshot, or 0: the simulated state machine is otherwise volatile).
    pub fn node_restarted(&mut self, id: NodeId, applied: Index) {
        self.applied.insert(id, applied);
        self.leader_tail.remove(&id);
        self.reads.retain(|(node, _), _| *node != id);
    }

    pub fn applied(&self, id: NodeId) -> Index {
        self.applied.get(&id).copied().unwrap_or(0)
    }

    pub fn max_commit_known(&self) -> Index {
        self.max_commit
    }

    /// Election Safety (§5.2) and Leader Completeness (§5.4): at most one
    /// leader per term, and a new leader holds every committed entry.
    pub fn became_leader(&mut self, raw: &RawNode) -> Result<(), String> {
        let (id, term) = (raw.id(), raw.term());
        if let Some(&other) = self.leaders.get(&term)
            && other != id
        {
            return Err(format!(
                "Election Safety: n{other} and n{id} both lead term {term}"
            ));
        }
        self.leaders.insert(term, id);
        for (&index, (entry_term, _, _)) in &self.applied_log {
            // A leader of an older term can still win late (its votes were
            // cast before the newer term began); it is bound by nothing
            // committed after its term.
            if self
                .committed_by_term
                .get(&index)
                .is_some_and(|&t| t >= term)
            {
                continue;
            }
            if raw.log().term(index) != Some(*entry_term) && index > raw.log().offset() {
                return Err(format!(
                    "Leader Completeness: n{id} leads term {term} without committed entry {index} (term {entry_term}); \
                     its term there is {:?}",
                    raw.log().term(index)
                ));
            }
        }
        Ok(())
    }

    /// Log Matching (§5.3) and Leader Append-Only (§5.3), checked on what a
    /// node is about to persist.
    pub fn persisting(
        &mut self,
        raw: &RawNode,
        disk: &MemStorage,
        entries: &[Entry],
    ) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let id = raw.id();
        let disk_last = disk.last_index().expect("memory storage");
        if raw.role() == Role::Leader && first.index <= disk_last {
            // A leader writes at an index it already stored only if it is
            // replacing entries, which a leader never does.
            let stored = disk.entries(first.index, first.index).expect("in range");
            if stored[0].term != first.term || stored[0].data != first.data {
                return Err(format!(
                    "Leader Append-Only: leader n{id} overwrites its entry {} (term {} -> {})",
                    first.index, stored[0].term, first.term
                ));
            }
        }
        let mut prev_term = raw.log().term(first.index - 1);
        for e in entries {
            let prev = prev_term.unwrap_or(0);
            match self.entries.get(&(e.index, e.term)) {
                Some((p, data)) if (*p != prev && prev_term.is_some()) || *data != e.data => {
                    return Err(format!(
                        "Log Matching: n{id} stores entry {} term {} with previous term {prev} and data {:?}, \
                         another log has previous term {p} and data {:?}",
                        e.index, e.term, e.data, data
                    ));
                }
                Some(_) => {}
                None => {
                    self.entries
                        .insert((e.index, e.term), (prev, e.data.clone()));
                }
            }
            prev_term = Some(e.term);
        }
        Ok(())
    }

    /// State Machine Safety (§5.4.3): no two nodes apply different commands
    /// at one index, or reach different states by applying it, and each
    /// node applies in order without gaps. `state` is the digest of the
    /// node's state machine after applying `e`. Returns whether `e` was
    /// applied here first.
    pub fn applied_entry(
        &mut self,
        id: NodeId,
        node_term: Term,
        e: &Entry,
        state: u64,
    ) -> Result<bool, String> {
        let last = self.applied(id);
        if e.index != last + 1 {
            return Err(format!(
                "apply order: n{id} applied {} after {last}",
                e.index
            ));
        }
        let first = match self.applied_log.get(&e.index) {
            Some((term, data, _)) if *term != e.term || *data != e.data => {
                return Err(format!(
                    "State Machine Safety: n{id} applies {:?} (term {}) at index {}, another node applied {:?} (term {term})",
                    e.data, e.term, e.index, data
                ));
            }
            Some((_, _, digest)) if *digest != state => {
                return Err(format!(
                    "State Machine Safety: applying {:?} at index {} leaves n{id} in another state than it left \
                     the node that applied it first",
                    e.data, e.index
                ));
            }
            Some(_) => false,
            None => {
                if self.prefix_digest(e.index - 1).is_none() {
                    return Err(format!(
                        "State Machine Safety: n{id} applies {} before anyone applied {}",
                        e.index,
                        e.index - 1
                    ));
                }
                self.applied_log
                    .insert(e.index, (e.term, e.data.clone(), state));
                self.committed_by_term.insert(e.index, node_term);
                true
            }
        };
        self.applied.insert(id, e.index);
        Ok(first)
    }

    /// The digest of the state after applying everything up to `index`
    /// (0 before anything: no node's state digest is compared to it).
    pub fn prefix_digest(&self, index: Index) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.applied_log.get(&index).map(|(_, _, d)| *d)
    }

    /// A node replaced its state by a snapshot at `index` with `state`
    /// (its digest): it must equal what was applied up to there.
    pub fn snapshot_installed(
        &mut self,
        id: NodeId,
        index: Index,
        state: u64,
    ) -> Result<(), String> {
        if self.prefix_digest(index) != Some(state) {
            return Err(format!(
                "State Machine Safety: n{id} installs a snapshot at {index} whose state differs from the applied history"
            ));
        }
        self.applied.insert(id, index);
        Ok(())
    }

    pub fn read_started(&mut self, id: NodeId, ctx: u64, must_see: Index) {
        self.reads.insert((id, ctx), must_see);
    }

    /// Linearizable reads (thesis 6.4): a read released at `index` must
    /// include every write committed before it began.
    pub fn read_released(&mut self, id: NodeId, rs: ReadState) -> Result<(), String> {
        let Some(must_see) = self.reads.remove(&(id, rs.ctx)) else {
            return Err(format!(
                "ReadIndex: n{id} released read {} that was not pending",
                rs.ctx
            ));
        };
        if rs.index < must_see {
            return Err(format!(
                "ReadIndex linearizability: n{id} released read {} at index {}, but index {must_see} was \
                 committed before the read began",
                rs.ctx, rs.index
            ));
        }
        Ok(())
    }

    pub fn read_failed(&mut self, id: NodeId, ctx: u64) {
        self.reads.remove(&(id, ctx));
    }

    /// Checks run after every step over all live nodes.
    pub fn check_step(&mut self, nodes: &[&RawNode]) -> Result<(), String> {
        for raw in nodes {
            let log = raw.log();
            log.check();
            self.max_commit = self.max_commit.max(log.committed());
            let id = raw.id();
            if raw.role() == Role::Leader {
                let term = raw.term();
                let last = log.last_index();
                if let Some(&(t, prev_last, prev_last_term)) = self.leader_tail.get(&id)
                    && t == term
                    && (last < prev_last || log.term(prev_last) != Some(prev_last_term))
                {
                    return Err(format!(
                        "Leader Append-Only: leader n{id} of term {term} had entry {prev_last} (term {prev_last_term}), \
                         now its log ends at {last} with term {:?} there",
                        log.term(prev_last)
                    ));
                }
                self.leader_tail.insert(id, (term, last, log.last_term()));
            } else {
                self.leader_tail.remove(&id);
            }
            // A node's commit index never runs ahead of what was applied
            // consistently: every committed entry it holds matches the
            // applied history.
            let committed = log.committed();
            if let Some((&index, (term, _, _))) = self.applied_log.range(..=committed).next_back()
                && index > log.offset()
                && log.term(index) != Some(*term)
            {
                return Err(format!(
                    "State Machine Safety: n{id} has committed index {committed} but term {:?} at applied index \
                     {index} (applied term {term})",
                    log.term(index)
                ));
            }
        }
        Ok(())
    }
}
